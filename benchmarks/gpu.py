"""Generation speed and VRAM: the plain diffusers recipe against Backdrop's path, in one run.

    python benchmarks/gpu.py                      # CUDA GPU: full-size SDXL, 1024x1024, 25 steps, CFG
    python benchmarks/gpu.py --compile            # also Backdrop's path with BACKDROP_COMPILE=1
    python benchmarks/gpu.py --scale reduced      # any machine: same code, tiny widths, 128 px, 20 steps

No weights are downloaded: every component is built with random weights from the architecture configs in
benchmarks/configs/ (the hub models' own config.json files). Time and memory depend on the architecture
and the sizes, not on the values of the weights, so these figures are those of the real models.

Rows, each with seconds per image and peak VRAM (``torch.cuda.max_memory_allocated``):
  * ``plain``: ``StableDiffusionXLControlNetInpaintPipeline`` as its documentation sets it up: fp16, the
    stock SDXL VAE (which upcasts to fp32), ``pipe(prompt=..., ip_adapter_image=..., num_images_per_prompt=n)``.
  * ``backdrop``: ``pipeline.generate`` on the same weights, loaded by ``models.assemble`` (the end of
    Backdrop's own loading): fp16-safe VAE, fused self-attention, channels-last, embeddings once per
    request; the product's own mask is given, so no mask model runs.
  * ``backdrop/model``, ``backdrop/sequential``: Backdrop's path in each offload memory mode.
for the full and the small canny ControlNet, and 1 and 4 samples. Then the detail pass (``detail``: its seconds
over the first generation's at 1, 4 and 16 MP outputs, as benchmarks/detail.py measures for the tiny set;
"pending" without a GPU). Prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, machine, table, write_report

CONFIGS = ROOT / "benchmarks" / "configs"

# --scale reduced: the same architectures, a sliver of their width and depth, so the script runs anywhere.
_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32)
_DENOISER = dict(block_out_channels=[32, 64, 128], attention_head_dim=[2, 4, 8], cross_attention_dim=64,
                 addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32)
REDUCED = {
    "unet": _DENOISER | {"transformer_layers_per_block": [1, 1, 2], "sample_size": 16},
    "controlnet": _DENOISER | {"transformer_layers_per_block": [1, 1, 2],
                               "conditioning_embedding_out_channels": [8, 16, 32, 32]},
    "controlnet_small": _DENOISER | {"conditioning_embedding_out_channels": [8, 16, 32, 32]},
    "vae": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "sample_size": 128},
    "vae_fp16_fix": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "sample_size": 128},
    "text_encoder": _TEXT,
    "text_encoder_2": _TEXT,
    "image_encoder": _TEXT | {"projection_dim": 32},
    "ip_adapter": {"image_embed_dim": 32},
}
SCALES = {"full": {"size": 1024, "steps": 25}, "reduced": {"size": 128, "steps": 20}}  # 20: the API's least


def config(name: str, scale: str) -> dict[str, Any]:
    """``benchmarks/configs/<name>.json`` without its notes, shrunk for ``--scale reduced``."""
    values = {key: value for key, value in json.loads((CONFIGS / f"{name}.json").read_text()).items()
              if not key.startswith("_")}
    return values | (REDUCED.get(name, {}) if scale == "reduced" else {})


def build_components(scale: str, device: str, dtype: Any, seed: int = 0) -> dict[str, Any]:
    """Every model with random weights (seeded), made directly on ``device`` and cast to ``dtype``."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from pipeline.backends.local.models import quiet_libraries
    from pipeline.backends.local.tiny import byte_tokenizer

    quiet_libraries()

    def made(factory: Any) -> Any:
        with torch.device(device):
            return factory().to(dtype).eval().requires_grad_(False)

    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()  # byte-level: every prompt tokenises, and ids fit any CLIP vocabulary
    image_config = config("image_encoder", scale)
    side = image_config["image_size"]
    return {
        "unet": made(lambda: UNet2DConditionModel.from_config(config("unet", scale))),
        "controlnet": made(lambda: ControlNetModel.from_config(config("controlnet", scale))),
        "controlnet_small": made(lambda: ControlNetModel.from_config(config("controlnet_small", scale))),
        "vae": made(lambda: AutoencoderKL.from_config(config("vae", scale))),
        "vae_fp16_fix": made(lambda: AutoencoderKL.from_config(config("vae_fp16_fix", scale))),
        "text_encoder": made(lambda: CLIPTextModel(CLIPTextConfig(**config("text_encoder", scale)))),
        "text_encoder_2": made(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2", scale)))),
        "image_encoder": made(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**image_config))),
        "feature_extractor": CLIPImageProcessor(size={"shortest_edge": side},
                                                crop_size={"height": side, "width": side}),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": EulerDiscreteScheduler.from_config(config("scheduler", scale)),
    }


def ip_adapter_state(unet: Any, scale: str) -> dict[str, dict[str, Any]]:
    """Random IP-Adapter weights in the nested form ``load_ip_adapter`` takes instead of a file."""
    from pipeline.backends.local.tiny import ip_adapter_weights

    adapter = config("ip_adapter", scale)
    flat = ip_adapter_weights(unet, image_embed_dim=adapter["image_embed_dim"], num_tokens=adapter["num_tokens"],
                              scale=0.02)
    nested: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in flat.items():
        group, _, name = key.partition(".")
        nested[group][name] = tensor.to(unet.dtype)
    return nested


def pipeline_of(cls: Any, components: dict[str, Any], *, controlnet: str, vae: str, ip_state: dict) -> Any:
    parts = {key: value for key, value in components.items()
             if key not in ("controlnet", "controlnet_small", "vae", "vae_fp16_fix")}
    pipe = cls(**parts, controlnet=components[controlnet], vae=components[vae])
    pipe.load_ip_adapter(ip_state, subfolder="", weight_name="", image_encoder_folder=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Meter:
    """Wall time and peak device memory of one call; CUDA work is waited for on both sides."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")

    def __call__(self, function: Any) -> tuple[float, float | None]:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        function()
        if self.cuda:
            self.torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        return seconds, peak


def inputs(size: int) -> dict[str, Any]:
    """The product, its mask and canny map (made by Backdrop's own preparation) and the reference."""
    from render import perfume_bottle, reference_scene

    from pipeline import BgReplaceRequest
    from pipeline.stages.prepare import prepare_inputs

    photo, alpha = perfume_bottle(size, size)
    request = BgReplaceRequest(image=photo, mask=alpha, ref_image=reference_scene("jungle", 512, 512),
                               prompt="perfume bottle on a mossy rock in a jungle", negative_prompt="blurry",
                               scheduler="Euler", seed=1, resolution=size)
    prepared = prepare_inputs(request, size)
    return {"request": request, "prepared": prepared}


def plain_call(pipe: Any, data: dict[str, Any], *, samples: int, steps: int, device: str) -> Any:
    import torch

    request, prepared = data["request"], data["prepared"]
    return lambda: pipe(
        prompt=request.prompt, negative_prompt=request.negative_prompt, image=prepared.image,
        mask_image=prepared.inpaint_mask, control_image=prepared.canny, ip_adapter_image=request.ref_image,
        width=prepared.size[0], height=prepared.size[1], strength=1.0, num_inference_steps=steps,
        guidance_scale=request.guidance_scale, controlnet_conditioning_scale=request.cn_weight,
        num_images_per_prompt=samples, generator=torch.Generator(device).manual_seed(1),
    )


def backdrop_call(models: Any, data: dict[str, Any], *, samples: int, steps: int) -> Any:
    from pipeline import generate

    request = data["request"].replace(samples=samples, num_inference_steps=steps)
    return lambda: generate(request, models=models)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from diffusers import StableDiffusionXLControlNetInpaintPipeline

    from pipeline.backends.local.backend import free_device_memory
    from pipeline.backends.local.diffusion import BackdropInpaintPipeline
    from pipeline.backends.local.models import ModelSpec, Runtime, assemble
    from pipeline.backends.local.speed import SpeedOptions

    scale = SCALES[args.scale]
    size, steps = args.size or scale["size"], args.steps or scale["steps"]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype_name = "float16" if device.startswith("cuda") else "float32"
    dtype = getattr(torch, dtype_name)
    meter = Meter(device)
    data = inputs(size)
    spec = ModelSpec(name=f"random-{args.scale}", base="benchmarks/configs", controlnet="", ip_adapter="",
                     ip_adapter_subfolder="", ip_adapter_weight_name="", image_encoder="",
                     image_encoder_subfolder="", vae="", native_resolution=size, variant="")
    rows: list[dict[str, Any]] = []

    def record(recipe: str, controlnet: str, samples: int, mode: str, call: Any, variant: str = "") -> None:
        if args.warmup and mode != "sequential":  # sequential offload is slow and bound by copies: one run
            call()  # warm-up: kernels chosen, memory pools grown, compiled blocks built
        seconds, peak = meter(call)
        rows.append({"recipe": recipe, "variant": variant, "controlnet": controlnet, "samples": samples,
                     "memory_mode": mode,
                     "steps": steps, "seconds": round(seconds, 3),
                     "seconds_per_image": round(seconds / samples, 3),
                     "peak_vram_gib": None if peak is None else round(peak, 2)})
        print(f"  {recipe:<9} {variant[:40]:<40} {controlnet:<6} x{samples} {mode:<10} {seconds / samples:8.3f} s/image"
              + ("" if peak is None else f"  {peak:6.2f} GiB"), flush=True)

    print(f"building random {args.scale} models on {device} ({dtype_name})", flush=True)
    components = build_components(args.scale, device, dtype)
    ip_state = ip_adapter_state(components["unet"], args.scale)
    controlnets = {"full": "controlnet", "small": "controlnet_small"}

    # (a) the plain recipe, on untouched modules (Backdrop's speed-ups change them in place).
    for name in args.controlnets:
        pipe = pipeline_of(StableDiffusionXLControlNetInpaintPipeline, components, controlnet=controlnets[name],
                           vae="vae", ip_state=ip_state)
        pipe.set_ip_adapter_scale(data["request"].ip_adapter_weight)
        for samples in args.samples:
            record("plain", name, samples, "none", plain_call(pipe, data, samples=samples, steps=steps, device=device),
                   f"diffusers defaults ({dtype_name}, stock VAE)")
        del pipe

    # (b) Backdrop's path on the same weights; on the first ControlNet, one speed-up at a time first.
    # Fusing changes the modules in place, so the steps only add, ending at Backdrop's defaults.
    runtime = Runtime(device=device, dtype=dtype_name, memory_mode="none")
    default = SpeedOptions.for_runtime(device, "none")
    steps_up = [("no speed-ups, stock VAE", "vae", SpeedOptions(False, False, False)),
                ("+ fp16-fix VAE", "vae_fp16_fix", SpeedOptions(False, False, False)),
                ("+ channels_last", "vae_fp16_fix", SpeedOptions(True, False, False))] if args.ablation else []
    steps_up.append(("Backdrop defaults (+ fused QKV on CUDA)", "vae_fp16_fix", default))

    def backdrop_rows(name: str, variant: str, vae: str, options: Any) -> None:
        models = assemble(pipeline_of(BackdropInpaintPipeline, components, controlnet=controlnets[name], vae=vae,
                                      ip_state=ip_state), spec, runtime, speed=options)
        for samples in args.samples:
            record("backdrop", name, samples, "none", backdrop_call(models, data, samples=samples, steps=steps),
                   variant)

    for index, name in enumerate(args.controlnets):
        for variant, vae, options in steps_up if index == 0 else steps_up[-1:]:
            backdrop_rows(name, variant, vae, options)
    detail = detail_section(args, device, lambda: assemble(
        pipeline_of(BackdropInpaintPipeline, components, controlnet="controlnet", vae="vae_fp16_fix",
                    ip_state=ip_state), spec, runtime, speed=default), size, steps)
    for mode in args.modes:
        for module in components.values():  # offload starts from models in CPU memory
            if isinstance(module, torch.nn.Module):
                module.to("cpu")
        free_device_memory()
        pipe = pipeline_of(BackdropInpaintPipeline, components, controlnet="controlnet", vae="vae_fp16_fix",
                           ip_state=ip_state)
        models = assemble(pipe, spec, Runtime(device=device, dtype=dtype_name, memory_mode=mode))
        for samples in args.mode_samples if mode != "sequential" else args.mode_samples[:1]:
            record("backdrop", "full", samples, mode, backdrop_call(models, data, samples=samples, steps=steps),
                   "Backdrop defaults")
        pipe.remove_all_hooks()
        del models, pipe
    if args.compile:  # last: compiled blocks stay compiled, and offload hooks must not meet them
        backdrop_rows(args.controlnets[0], "+ torch.compile (BACKDROP_COMPILE=1)", "vae_fp16_fix",
                      dataclasses.replace(default, compile=True))
    return {"benchmark": "gpu", "scale": args.scale, "device": device, "dtype": dtype_name, "size": size,
            "steps": steps, "machine": machine(), "rows": rows, "speedups": speedups(rows), "detail": detail}


def detail_section(args: argparse.Namespace, device: str, models: Any, size: int, steps: int) -> list[dict[str, Any]]:
    """The detail pass's cost over the first generation at 1, 4 and 16 MP outputs (benchmarks/detail.py's rows),
    with Backdrop's defaults on the full ControlNet. On a CPU the rows say pending: SDXL-sized tiles there take
    hours, and benchmarks/detail.py already measures the tiny set."""
    from detail import FACTORS, detail_rows

    if not device.startswith("cuda") or not args.detail:
        return [{"output_mp_sdxl": factor * factor, "output_side": size * factor, "pending": "needs a GPU run"}
                for factor in FACTORS]
    return detail_rows(models(), native=size, steps=steps, say=lambda line: print(line, flush=True))


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain recipe time over Backdrop's, for each ControlNet and sample count measured both ways."""
    def seconds(recipe: str, controlnet: str, samples: int) -> float | None:  # the first such row
        return next((row["seconds"] for row in rows if (row["recipe"], row["controlnet"], row["samples"],
                     row["memory_mode"]) == (recipe, controlnet, samples, "none")), None)

    result = []
    for row in rows:
        if row["recipe"] == "backdrop" and row["memory_mode"] == "none":
            plain = seconds("plain", row["controlnet"], row["samples"])
            if plain:
                result.append({"variant": row["variant"], "controlnet": row["controlnet"], "samples": row["samples"],
                               "speedup": round(plain / row["seconds"], 3)})
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=tuple(SCALES), default="full")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--size", type=int, help="image side in pixels (default 1024 full, 128 reduced)")
    parser.add_argument("--steps", type=int, help="denoising steps, 20 to 100 (default 25 full, 20 reduced)")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--controlnets", nargs="+", choices=("full", "small"), default=["full", "small"])
    parser.add_argument("--modes", nargs="*", choices=("none", "model", "sequential"), default=["model", "sequential"],
                        help="Backdrop memory modes to measure after the comparison")
    parser.add_argument("--mode-samples", type=int, nargs="+", default=[1, 4],
                        help="sample counts for the memory-mode rows (sequential offload runs the first only)")
    parser.add_argument("--compile", action="store_true", help="also measure Backdrop's path with BACKDROP_COMPILE=1")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="time each row's first call (only to check the script runs: figures then include set-up)")
    parser.add_argument("--no-ablation", dest="ablation", action="store_false",
                        help="skip the rows that add Backdrop's speed-ups one at a time")
    parser.add_argument("--no-detail", dest="detail", action="store_false",
                        help="skip the detail pass rows (1, 4 and 16 MP outputs; GPU only)")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/gpu-<scale>-<device>.json")
    args = parser.parse_args(argv)

    report = run(args)
    print()
    print(table(["recipe", "variant", "ControlNet", "samples", "memory mode", "steps", "s/image", "peak VRAM GiB"],
                [[r["recipe"], r["variant"], r["controlnet"], r["samples"], r["memory_mode"], r["steps"],
                  r["seconds_per_image"], "-" if r["peak_vram_gib"] is None else r["peak_vram_gib"]]
                 for r in report["rows"]]))
    print()
    print(table(["plain time / Backdrop time", "ControlNet", "samples", "speed-up"],
                [[s["variant"], s["controlnet"], s["samples"], f"{s['speedup']:.2f}x"] for s in report["speedups"]]))
    print()
    print(table(["detail pass: output (SDXL scale)", "tiles", "first generation s", "detail s", "detail / first"],
                [[f"{r['output_mp_sdxl']} MP ({r['output_side']} px)", r.get("tiles", "-"), r.get("generate_s", "-"),
                  r.get("detail_s", "-"), f"{r['ratio']:.2f}x" if "ratio" in r else r.get("pending", "-")]
                 for r in report["detail"]]))
    device = report["device"].split(":")[0]
    write_report(args.json or RESULTS / f"gpu-{args.scale}-{device}.json", report)
    return report


if __name__ == "__main__":
    main()
