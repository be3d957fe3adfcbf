"""The ``tiny`` model set: SDXL-shaped components with random weights, built from configs in code.

They are saved once to a cache folder in the hub's own layouts (a diffusers pipeline folder, a ControlNet
folder, the h94/IP-Adapter ``sdxl_models`` layout) and then loaded by exactly the code that loads the real
models, so tests exercise the real loading path without a download. Weights are seeded: the same build
always yields the same models.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pipeline.contract.settings import setting

# Bump when the configs below change: the set lives in a folder of this name, so a stale cache is never reused,
# and code that still expects an older set (another checkout sharing the cache) keeps finding its own.
TINY_VERSION = "tiny-v5"
TEXT_HIDDEN = 32  # each text encoder's width; the UNet sees both concatenated
TIME_EMBED_DIM = 8
IMAGE_EMBED_DIM = 32
IP_TOKENS = 4  # the plain IP-Adapter's image tokens
NATIVE_RESOLUTION = 128

# SDXL's layout in miniature: no attention at the first level, then cross-attention at two widths (SDXL: 640
# and 1280), deeper at the last. Two widths matter: blocks of different widths share one compiled-code cache
# (speed.py), and an IP-Adapter's projections must fit each of them.
_UNET_SHAPE = dict(
    block_out_channels=(32, 32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    attention_head_dim=(2, 2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=TIME_EMBED_DIM,
    transformer_layers_per_block=(1, 1, 2),
    # SDXL's "added conditions": six time ids, each embedded, plus the pooled text of encoder 2.
    projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_HIDDEN,
    cross_attention_dim=2 * TEXT_HIDDEN,
)
_UP_BLOCKS = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")

# SDXL's own scheduler/scheduler_config.json, every key: other schedulers are built from this config
# (schedulers.py), and keys Euler ignores, such as clip_sample, still decide DDIM's behaviour.
SDXL_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def default_cache_dir() -> Path:
    return setting("BACKDROP_CACHE")


def ensure_tiny_models(cache_dir: Path | None = None) -> Path:
    """The folder holding the tiny model set, building it first if it is not there yet."""
    target = (cache_dir or default_cache_dir()) / TINY_VERSION
    if (target / "complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_VERSION}-", dir=target.parent))
    try:
        _build(staging)
        (staging / "complete").write_text("ok\n")
        try:
            staging.rename(target)  # atomic: a half-built set is never seen under the final name
        except OSError:
            if not (target / "complete").exists():  # lost a race to another process? theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build(root: Path) -> None:
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        _build_base(root / "base")
        _build_controlnet(root / "controlnet")
        _build_ip_adapter(root / "ip_adapter" / "sdxl_models")


def _build_base(path: Path) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        in_channels=9,  # noisy latents + mask + masked-image latents: an inpainting UNet
        out_channels=4,
        up_block_types=_UP_BLOCKS,
        sample_size=NATIVE_RESOLUTION // 8,
        **_UNET_SHAPE,
    )
    vae = AutoencoderKL(  # four blocks: it downsamples by 8, like SDXL's, so sizes behave the same
        block_out_channels=(16, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=NATIVE_RESOLUTION,
    )
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)  # keeps the keys Euler ignores
    tokenizer = byte_tokenizer()
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        hidden_act="gelu",
        projection_dim=TEXT_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_config)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(path)


def byte_tokenizer():
    """A byte-level CLIP tokenizer with no merges: every character is a token, nothing is unknown."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, which byte-level BPE vocabularies use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _build_controlnet(path: Path) -> None:
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel(
        in_channels=4,  # a ControlNet sees the plain 4-channel latents, even beside an inpainting UNet
        conditioning_embedding_out_channels=(16, 16, 32, 32),  # downsamples by 8, as the VAE does
        **_UNET_SHAPE,
    )
    # ControlNet zero-initialises its output convolutions; left so, cn_weight would change nothing.
    with torch.no_grad():
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(module.weight, std=0.05)
            torch.nn.init.normal_(module.bias, std=0.05)
    controlnet.save_pretrained(path)


def _build_ip_adapter(path: Path) -> None:
    """``ip-adapter_sdxl.safetensors`` plus ``image_encoder/`` in the h94/IP-Adapter layout."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=IMAGE_EMBED_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=32,
            patch_size=4,
        )
    )
    encoder.save_pretrained(path / "image_encoder")

    # One to_k_ip/to_v_ip pair per cross-attention layer of the UNet the adapter will be loaded into.
    unet = UNet2DConditionModel(
        in_channels=9, out_channels=4, up_block_types=_UP_BLOCKS, **_UNET_SHAPE
    )
    weights = ip_adapter_weights(unet, image_embed_dim=IMAGE_EMBED_DIM, num_tokens=IP_TOKENS)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "ip-adapter_sdxl.safetensors"))


def ip_adapter_weights(unet, *, image_embed_dim: int, num_tokens: int, scale: float = 0.2) -> dict:
    """Random IP-Adapter weights for ``unet``, keyed as ``ip-adapter_sdxl.safetensors`` is: ``image_proj.*``
    (the image embedding projected to ``num_tokens`` text-like tokens) and ``ip_adapter.{id}.to_k_ip`` /
    ``to_v_ip`` per cross-attention layer, numbered as diffusers' loader walks them (1, 3, 5, ...: the
    original IP-Adapter counted self-attention layers in between). Tensors are made on the UNet's device."""
    import torch

    cross_dim = unet.config.cross_attention_dim
    device = unet.device
    weights = {
        "image_proj.proj.weight": torch.randn(cross_dim * num_tokens, image_embed_dim, device=device) * scale,
        "image_proj.proj.bias": torch.zeros(cross_dim * num_tokens, device=device),
        "image_proj.norm.weight": torch.ones(cross_dim, device=device),
        "image_proj.norm.bias": torch.zeros(cross_dim, device=device),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(name, unet.config.block_out_channels)
        weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross_dim, device=device) * scale
        weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross_dim, device=device) * scale
        key_id += 2
    return weights


def _hidden_size(processor_name: str, block_out_channels: tuple[int, ...]) -> int:
    if processor_name.startswith("mid_block"):
        return block_out_channels[-1]
    block_id = int(processor_name.split(".")[1])
    if processor_name.startswith("up_blocks"):
        return list(reversed(block_out_channels))[block_id]
    return block_out_channels[block_id]
