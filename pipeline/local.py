"""Local generation: SDXL inpainting + canny ControlNet + IP-Adapter with diffusers, on this machine."""

from __future__ import annotations

import time
from typing import Any

from PIL import Image

from .errors import BackdropError, GenerationCancelled
from .images import to_rgb
from .models import LoadedModels, load_models
from .prepare import PreparedInputs, compose_output, prepare_inputs, resolve_seeds
from .request import BgReplaceRequest
from .result import BgReplaceResult, CancelCheck, Intermediates, Progress, ProgressCallback
from .schedulers import make_scheduler


def generate_local(
    request: BgReplaceRequest,
    *,
    models: LoadedModels | None = None,
    model_set: str = "sdxl",
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> BgReplaceResult:
    """Run ``request`` on this machine and return the composited images at the requested size."""
    report = on_progress or (lambda progress: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if models is None:
        report(Progress("load", 0.0, "Loading models (the first run downloads them)"))
        models = load_models(model_set, on_progress=lambda message: report(Progress("load", 0.0, message)))
        timings["load"] = time.perf_counter() - started

    stage_start = time.perf_counter()
    report(Progress("mask", 0.0, "Finding the product"))
    prepared = prepare_inputs(request, models.spec.native_resolution)
    timings["prepare"] = time.perf_counter() - stage_start

    seeds = resolve_seeds(request.seed, request.samples)
    stage_start = time.perf_counter()
    backgrounds = _denoise(models, request, prepared, seeds, report, should_cancel)
    timings["generate"] = time.perf_counter() - stage_start

    stage_start = time.perf_counter()
    report(Progress("compose", 0.0, "Laying the product back over the new background"))
    images = tuple(compose_output(request, prepared, background) for background in backgrounds)
    timings["compose"] = time.perf_counter() - stage_start
    timings["total"] = time.perf_counter() - started
    report(Progress("compose", 1.0, "Done"))
    return BgReplaceResult(
        images=images,
        seeds=tuple(seeds),
        request=request,
        timings=timings,
        backend="local",
        info=models.info() | {
            "generation_size": list(prepared.size),
            "output_size": list(images[0].size),
            "mask_source": prepared.mask_source,
        },
        intermediates=Intermediates(
            subject_alpha=prepared.alpha,
            inpaint_mask=prepared.inpaint_mask,
            canny=prepared.canny,
            backgrounds=tuple(backgrounds),
        ),
    )


def _denoise(
    models: LoadedModels,
    request: BgReplaceRequest,
    prepared: PreparedInputs,
    seeds: list[int],
    report: ProgressCallback,
    should_cancel: CancelCheck | None,
) -> list[Image.Image]:
    import torch

    pipe = models.pipe
    total_steps = max(1, int(request.num_inference_steps * request.strength))

    def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("generation was cancelled")
        report(Progress("denoise", min(1.0, (step + 1) / total_steps), f"Step {step + 1}/{total_steps}"))
        return tensors

    with models.lock:  # one generation at a time on the device
        pipe.scheduler = make_scheduler(request.scheduler, models.scheduler_config)
        pipe.set_ip_adapter_scale(request.ip_adapter_weight)
        # CPU generators: the same seed gives the same noise on any device.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        report(Progress("denoise", 0.0, f"Generating {len(seeds)} image(s) at {prepared.size[0]}x{prepared.size[1]}"))
        try:
            output = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                image=prepared.image,
                mask_image=prepared.inpaint_mask,
                control_image=prepared.canny,
                ip_adapter_image=to_rgb(request.ref_image),
                width=prepared.size[0],
                height=prepared.size[1],
                strength=request.strength,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                controlnet_conditioning_scale=request.cn_weight,
                num_images_per_prompt=len(seeds),
                generator=generators,
                callback_on_step_end=on_step_end,
                output_type="pil",
            )
        except torch.OutOfMemoryError:
            _free_device_memory()
            raise BackdropError(
                f"the GPU ran out of memory making {len(seeds)} image(s) at {prepared.size[0]}x{prepared.size[1]}; "
                "try fewer samples, a smaller resolution, or BACKDROP_MEMORY_MODE=model (or sequential)"
            ) from None
    return list(output.images)


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
