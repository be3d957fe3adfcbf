"""Local generation: SDXL inpainting + canny ControlNet + IP-Adapter with diffusers, on this machine."""

from __future__ import annotations

import math
import time
from typing import Any

from PIL import Image

from pipeline.backends.local.models import LoadedModels, default_model_set, load_models
from pipeline.backends.local.schedulers import make_scheduler
from pipeline.backends.local.speed import pin_cpu_threads
from pipeline.contract.errors import GenerationCancelled, OutOfMemory
from pipeline.contract.images import to_rgb
from pipeline.contract.request import BgReplaceRequest
from pipeline.contract.result import BgReplaceResult, CancelCheck, Progress, ProgressCallback
from pipeline.stages.prepare import PreparedInputs, finish_result, resolve_seeds, starting_image
from pipeline.stages.reuse import Reuse


def generate_local(
    request: BgReplaceRequest,
    *,
    models: LoadedModels | None = None,
    model_set: str = "sdxl",
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    reuse: Reuse | None = None,
) -> BgReplaceResult:
    """Run ``request`` on this machine and return the composited images at the requested size.

    ``reuse`` carries the mask, canny map and prompt and reference embeddings from request to request
    (sweeps pass one); without it each request computes its own, once for all its samples.
    """
    report = on_progress or (lambda progress: None)
    reuse = reuse if reuse is not None else Reuse()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if models is None:
        report(Progress("load", 0.0, "Loading models (the first run downloads them)"))
        models = load_models(model_set, on_progress=lambda message: report(Progress("load", 0.0, message)))
        timings["load"] = time.perf_counter() - started

    stage_start = time.perf_counter()
    report(Progress("mask", 0.0, "Finding the product"))
    prepared = reuse.prepare(request, models.spec.native_resolution)
    timings["prepare"] = time.perf_counter() - stage_start

    backgrounds, seeds, detail_info = generate_backgrounds(request, prepared, models=models, timings=timings,
                                                           on_progress=report, should_cancel=should_cancel,
                                                           reuse=reuse)
    report(Progress("compose", 0.0, "Laying the product back over the new background"))
    result = finish_result(request, prepared, backgrounds, seeds, timings=timings, started=started, backend="local",
                           info=result_info(models, request) | detail_info)
    report(Progress("compose", 1.0, "Done"))
    return result


def generate_backgrounds(
    request: BgReplaceRequest,
    prepared: PreparedInputs,
    *,
    models: LoadedModels,
    timings: dict[str, float],
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    reuse: Reuse | None = None,
) -> tuple[list[Image.Image], list[int], dict[str, Any]]:
    """The device's part alone: new backgrounds for already prepared inputs, their seeds, and what the
    detail pass records (empty without one). A Ray batch masks and composites on other machines' CPUs
    around it (workflows.ray_batch)."""
    report = on_progress or (lambda progress: None)
    reuse = reuse if reuse is not None else Reuse()
    seeds = resolve_seeds(request.seed, request.samples)
    stage_start = time.perf_counter()
    backgrounds = _denoise(models, request, prepared, seeds, report, should_cancel, reuse)
    timings["generate"] = time.perf_counter() - stage_start
    detail_info: dict[str, Any] = {}
    if request.detail > 0 and request.output_size == "input":  # at the generation's own size there is no enlargement
        stage_start = time.perf_counter()
        backgrounds, detail_info = _refine_details(models, request, prepared, backgrounds, seeds, report,
                                                   should_cancel, reuse)
        timings["detail"] = time.perf_counter() - stage_start
    return backgrounds, seeds, detail_info


def result_info(models: LoadedModels, request: BgReplaceRequest) -> dict[str, Any]:
    """What a local result records about how it was made (its models, the pipeline's strength)."""
    from pipeline.backends.local.diffusion import run_strength  # only now: it imports torch and diffusers

    return models.info() | {"pipeline_strength": run_strength(request.strength)}


def _denoise(
    models: LoadedModels,
    request: BgReplaceRequest,
    prepared: PreparedInputs,
    seeds: list[int],
    report: ProgressCallback,
    should_cancel: CancelCheck | None,
    reuse: Reuse,
) -> list[Image.Image]:
    import torch

    pipe = models.pipe
    steps = max(1, int(request.num_inference_steps * request.strength))
    # With offload the GPU is small: samples go through one at a time, so 4 samples need the memory of 1.
    # Each sample's noise comes from its own seed alone, so the images are the same either way.
    batches = [seeds] if models.runtime.memory_mode == "none" else [[seed] for seed in seeds]
    total_steps = steps * len(batches)
    done_steps = 0

    reported = [0]  # the last step said: a second-order sampler's two UNet calls of one step say it once

    def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("generation was cancelled")
        current = done_steps + denoising_steps_done(step + 1, pipeline.num_timesteps, steps)
        if current != reported[0]:
            reported[0] = current
            report(Progress("denoise", min(1.0, current / total_steps), f"Step {current}/{total_steps}"))
        return tensors

    images: list[Image.Image] = []
    start = starting_image(prepared, request.ref_image)
    with models.lock:  # one generation at a time on the device
        _set_up(models, request)
        report(Progress("denoise", 0.0, f"Generating {len(seeds)} image(s) at {prepared.size[0]}x{prepared.size[1]}"))
        do_cfg = request.guidance_scale > 1  # diffusers skips the unconditional pass at guidance 1
        try:
            for batch in batches:
                images += _run_pipe(pipe, request, prepared, start, batch, on_step_end, do_cfg, reuse)
                done_steps += steps
        except torch.OutOfMemoryError:
            free_device_memory()
            raise OutOfMemory(
                f"the GPU ran out of memory making {len(seeds)} image(s) at {prepared.size[0]}x{prepared.size[1]}; "
                "try fewer samples, a smaller resolution, or BACKDROP_MEMORY_MODE=model (or sequential)"
            ) from None
    return images


def _set_up(models: LoadedModels, request: BgReplaceRequest) -> None:
    """The shared pipeline made ready for ``request`` (under ``models.lock``): its scheduler, its reference's
    weight, and torch's CPU thread count (speed.pin_cpu_threads: the same count remakes the same image)."""
    pin_cpu_threads()
    models.pipe.scheduler = make_scheduler(request.scheduler, models.scheduler_config)
    models.pipe.set_ip_adapter_scale(request.ip_adapter_weight)


def _refine_details(models: LoadedModels, request: BgReplaceRequest, prepared: PreparedInputs,
                    backgrounds: list[Image.Image], seeds: list[int], report: ProgressCallback,
                    should_cancel: CancelCheck | None, reuse: Reuse) -> tuple[list[Image.Image], dict[str, Any]]:
    """The detail pass (detail.py) over each sample's background, tile by tile through the loaded pipeline."""
    import torch

    from pipeline.backends.local.detail import refine_background, tile_strength

    pipe, strength = models.pipe, tile_strength(request.detail)
    do_cfg = request.guidance_scale > 1
    tile_side = models.spec.native_resolution

    def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("generation was cancelled")
        return tensors

    refined, tiles = [], []
    with models.lock:
        _set_up(models, request)
        for number, (background, seed) in enumerate(zip(backgrounds, seeds)):
            def run_tile(tile: Any, seed: int = seed) -> Image.Image:
                # Each tile its own noise, from the sample's seed and the tile's place: the same seed remakes it.
                generator = torch.Generator("cpu").manual_seed((seed * 1_000_003 + tile.index) % 2**63)
                return pipe(
                    **_prompt_embeddings(pipe, request, do_cfg, reuse),
                    ip_adapter_image_embeds=_reference_embeddings(pipe, request, do_cfg, reuse),
                    image=tile.image, mask_image=tile.mask, control_image=tile.canny,
                    width=tile.image.width, height=tile.image.height, strength=strength,
                    num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                    controlnet_conditioning_scale=request.cn_weight, num_images_per_prompt=1, generator=generator,
                    callback_on_step_end=on_step_end, output_type="pil",
                ).images[0]

            label = f" (image {number + 1}/{len(seeds)})" if len(seeds) > 1 else ""
            try:
                image, ran = refine_background(
                    background, prepared.product_pixels, prepared.alpha_pixels, output_size=prepared.product.size,
                    tile_side=tile_side, canny=(request.canny_low, request.canny_high), run_tile=run_tile,
                    report=report, should_cancel=should_cancel, label=label)
            except torch.OutOfMemoryError:
                free_device_memory()
                raise OutOfMemory(f"the GPU ran out of memory in the detail pass ({tile_side} px tiles); try "
                                  "BACKDROP_MEMORY_MODE=model (or sequential), or detail 0") from None
            refined.append(image)
            tiles.append(ran)
    return refined, {"detail_strength": strength, "detail_tiles": tiles}


def denoising_steps_done(calls: int, total_calls: int, steps: int) -> int:
    """How many of ``steps`` denoising steps ``calls`` of ``total_calls`` UNet calls have finished.

    diffusers calls the step-end callback once per UNet call, and second-order samplers (the default
    DPM2 Karras, Heun) make about two calls per step (2 x steps - 1 in all), so counting calls would read
    "Step 49/25". Rounding up shows step 1 from the first call and reaches ``steps`` only at the last one.
    """
    return min(steps, math.ceil(calls * steps / max(1, total_calls)))


def _run_pipe(pipe: Any, request: BgReplaceRequest, prepared: PreparedInputs, start: Image.Image,
              seeds: list[int], on_step_end: Any, do_cfg: bool, reuse: Reuse) -> list[Image.Image]:
    import torch

    from pipeline.backends.local.diffusion import run_strength

    # CPU generators: the same seed gives the same noise on any device.
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    output = pipe(
        **_prompt_embeddings(pipe, request, do_cfg, reuse),
        ip_adapter_image_embeds=_reference_embeddings(pipe, request, do_cfg, reuse),
        image=start,  # not the photo: see starting_image (the masked product is cut from it, the photo's pixels)
        mask_image=prepared.inpaint_mask,
        control_image=prepared.canny,
        width=prepared.size[0],
        height=prepared.size[1],
        strength=run_strength(request.strength),
        num_inference_steps=request.num_inference_steps,
        guidance_scale=request.guidance_scale,
        controlnet_conditioning_scale=request.cn_weight,
        num_images_per_prompt=len(seeds),
        generator=generators,
        callback_on_step_end=on_step_end,
        output_type="pil",
    )
    return list(output.images)


def _prompt_embeddings(pipe: Any, request: BgReplaceRequest, do_cfg: bool, reuse: Reuse) -> dict[str, Any]:
    """Both text encoders' outputs for one image; the pipeline repeats them for every sample."""
    key = (request.prompt, request.negative_prompt, do_cfg)
    if key not in reuse.prompts:
        reuse.counts["prompt"] += 1
        with _no_autograd():
            embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                prompt=request.prompt, negative_prompt=request.negative_prompt, device=pipe._execution_device,
                num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
            )
        reuse.prompts[key] = {"prompt_embeds": embeds, "negative_prompt_embeds": negative,
                              "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}
    return reuse.prompts[key]


def _reference_embeddings(pipe: Any, request: BgReplaceRequest, do_cfg: bool, reuse: Reuse) -> list[Any]:
    """The IP-Adapter's image-encoder output for the reference, for one image (repeated per sample)."""
    key = (id(request.ref_image), do_cfg)
    if key not in reuse.image_embeds:
        reuse.counts["image_embeds"] += 1
        with _no_autograd():
            embeds = pipe.prepare_ip_adapter_image_embeds(
                ip_adapter_image=to_rgb(request.ref_image), ip_adapter_image_embeds=None,
                device=pipe._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
            )
        reuse.image_embeds[key] = (request.ref_image, embeds)
    return reuse.image_embeds[key][1]


def _no_autograd() -> Any:
    """The encoders run outside the pipeline's own ``no_grad``; with autograd on, each cached embedding would
    hold its graph, and the encoders' activations with it (~0.7 GB for ViT-bigG), for as long as the reuse
    cache lives. ``no_grad`` rather than ``inference_mode``: inference tensors may not be changed in place
    outside inference mode, and the pipeline that later takes these makes no promise not to."""
    import torch

    return torch.no_grad()


def free_device_memory() -> None:
    """Hand freed GPU memory back (after an out-of-memory error, or between benchmark rows)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class LocalBackend:
    """The ``Backend`` that runs on this machine's GPU (or CPU)."""

    name = "local"
    options = frozenset({"models", "model_set"})

    def generate(self, request: BgReplaceRequest, *, model_set: str | None = None, **options: Any) -> BgReplaceResult:
        return generate_local(request, model_set=model_set or default_model_set(), **options)
