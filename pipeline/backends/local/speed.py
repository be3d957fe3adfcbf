"""Speed-ups applied to a loaded pipeline. Imported only when models load (it pulls in torch).

Each one keeps the maths (outputs match the plain pipeline's to rounding) and each is measured in
benchmarks/gpu.py. On CUDA: channels-last memory layout for the convolution-heavy UNet and ControlNet,
fused self-attention projections (one matmul for q, k and v), and, behind ``BACKDROP_COMPILE=1``,
``torch.compile`` of the repeated transformer blocks only ("regional" compilation: the same speed-up as
compiling the whole UNet for a fraction of the compile time). Image sizes are traced as dynamic shapes; other
differences between requests add compiled variants: see ``compile_transformer_blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contract.settings import cpu_threads, setting

COMPILE_ENV = "BACKDROP_COMPILE"


@dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool
    fuse_qkv: bool
    compile: bool

    @classmethod
    def for_runtime(cls, device: str, memory_mode: str) -> SpeedOptions:
        cuda = device.startswith("cuda")
        # Compiled blocks and offload hooks that move weights in and out mid-forward do not mix.
        # (Offload modes need no VAE slicing: they send samples through one at a time anyway, see local.py.)
        return cls(channels_last=cuda, fuse_qkv=cuda, compile=cuda and memory_mode == "none" and setting(COMPILE_ENV))

    def applied(self) -> list[str]:
        return [name for name, on in vars(self).items() if on]


def pin_cpu_threads() -> None:
    """Give torch this process's CPU thread count (settings.cpu_threads) for the work that follows in this
    thread. Called before every generation, not once at load: importing rembg (pymatting's numba) sets the
    OpenMP thread count to every CPU, so a process that had found a mask ran torch on more threads than one
    that had not, and a Ray actor (one CPU, no masking) made images a level apart from the local batch's."""
    import torch

    wanted = cpu_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def speed_up(pipe: Any, options: SpeedOptions) -> None:
    """Apply ``options`` to ``pipe`` in place, before it is placed on its device (offload hooks must see
    the final layers)."""
    import torch

    denoisers = [pipe.unet, pipe.controlnet]
    if options.channels_last:
        for model in denoisers:
            model.to(memory_format=torch.channels_last)
    if options.fuse_qkv:
        for model in denoisers:
            fuse_self_attention(model)
    if options.compile:
        for model in denoisers:
            compile_transformer_blocks(model)


def fuse_self_attention(model: Any) -> int:
    """Fuse q, k and v of every self-attention layer into one projection; returns how many were fused.

    diffusers' own ``fuse_qkv_projections()`` swaps *every* attention processor for the fused one, which
    silently drops the IP-Adapter's processors on the cross-attention layers (the reference image would
    stop mattering). Only self-attention is fused here; cross-attention keeps whatever processor it has.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0

    fused = 0
    for module in list(model.modules()):  # a list: layers are removed on the way
        # Only the stock processor is swapped: a custom or already fused one is left as it is.
        if (isinstance(module, Attention) and not module.is_cross_attention
            and type(module.processor) is AttnProcessor2_0):
            module.fuse_projections(fuse=True)
            # The fused layer replaces the three it came from: drop them rather than keep both in memory.
            del module.to_q, module.to_k, module.to_v
            module.set_processor(FusedAttnProcessor2_0())
            fused += 1
    return fused


# Compiled variants of the one shared block code that are kept; past this, new variants run uncompiled.
RECOMPILE_LIMIT = 64


def compile_transformer_blocks(model: Any, **compile_options: Any) -> int:
    """``torch.compile`` each transformer block of ``model`` (the repeated, heavy part); returns how many.

    Blocks compile on first use, and again for each new variant: every block of the UNet and the ControlNet
    runs the same ``BasicTransformerBlock.forward``, so they share one cache of compiled code. Each width
    (SDXL has two), the IP-Adapter's tuple of text and image tokens (UNet) or plain text (ControlNet), an
    IP-Adapter weight of 0 (another branch) and a batch of one (no guidance, one sample) add entries. On the
    tiny set dynamo's recompile log shows 4 after the first request, none for another weight, 6 after a
    weight of 0; a request without guidance then needed more than torch's default of 8, and with
    ``fullgraph=True`` that failed the request. So the limit is raised before compiling, and without
    ``fullgraph`` a variant past it runs uncompiled (slower, same images) instead of failing."""
    import torch
    from diffusers.models.attention import BasicTransformerBlock

    raise_recompile_limit(torch, RECOMPILE_LIMIT)
    options = {"dynamic": True} | compile_options
    blocks = [module for module in model.modules() if isinstance(module, BasicTransformerBlock)]
    for block in blocks:
        block.compile(**options)
    return len(blocks)


def raise_recompile_limit(torch: Any, limit: int) -> None:
    """Raise dynamo's per-code cache size to at least ``limit`` (named cache_size_limit before torch 2.6)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), limit))
