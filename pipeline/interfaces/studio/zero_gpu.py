"""Local generation for the studio, and on a ZeroGPU Space the GPU held only while it runs.

No figure here is measured on ZeroGPU yet: all are estimates, to be replaced by benchmarks/gpu.py's
seconds per image on its H200 slice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pipeline.contract.choices import SECOND_ORDER
from pipeline.contract.request import BgReplaceRequest
from pipeline.contract.result import Progress

_SECONDS_PER_PASS = 0.15  # estimate: one UNet + ControlNet pass, one image, SDXL at 1024², fp16 (two with CFG)
_SECONDS_TO_START = 10.0  # estimate: some 11 GB of fp16 weights moved in, encoders, VAE, compositing
_MAX_GPU_SECONDS = 300  # the most a ZeroGPU call is given


def _gpu_seconds(request: BgReplaceRequest, *args: Any, **kwargs: Any) -> int:
    """The budget for ``request``: UNet passes (per image; doubled by classifier-free guidance and by a
    second-order sampler, and in proportion to the pixels) plus the start. The models are loaded before the
    GPU is held (``generate_on_gpu``), so loading is not in it."""
    cfg = 2 if request.guidance_scale > 1 else 1
    order = 2 if request.scheduler in SECOND_ORDER else 1
    steps = max(1, int(request.num_inference_steps * request.strength))
    pixels = (request.resolution or 1024) ** 2 / 1024**2
    seconds = _SECONDS_TO_START + _SECONDS_PER_PASS * request.samples * steps * cfg * order * pixels
    return int(min(_MAX_GPU_SECONDS, seconds + 0.999))


def _on_zero_gpu() -> bool:
    """A ZeroGPU Space: the ``spaces`` package is there and the Space says so (it sets SPACES_ZERO_GPU)."""
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def _generate_plain(request: BgReplaceRequest, model_set: str) -> Any:
    """Generation with plain data in and out. ZeroGPU runs this in a forked worker and pickles what crosses:
    the request (settings and images), the model set's name and the result, never a callback."""
    from pipeline.backends import generate

    return generate(request, model_set=model_set)


def _gpu_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """On a ZeroGPU Space, ``function`` holding a GPU only while it runs, for about as long as the request
    needs; anywhere else, ``function`` itself."""
    if not _on_zero_gpu():
        return function
    import spaces

    return spaces.GPU(duration=_gpu_seconds)(function)


# Decorated at import, as ZeroGPU requires: app.py imports this module before it launches the studio.
_generate_in_gpu_worker = _gpu_function(_generate_plain)


def generate_on_gpu(request: BgReplaceRequest, model_set: str, **hooks: Any) -> Any:
    """Local generation. Anywhere but ZeroGPU: here, with progress, cancel and reuse (``hooks``). On ZeroGPU
    the models load first, in this process and outside the GPU budget (ZeroGPU keeps weights placed on CUDA
    outside a GPU function ready on the CPU and moves them in when the GPU is granted), then the GPU worker
    takes plain data; a callback cannot cross into it, so there the progress bar shows the stages only."""
    from pipeline.backends import generate
    from pipeline.backends.local.models import load_models

    if _generate_in_gpu_worker is _generate_plain:
        return generate(request, model_set=model_set, **hooks)
    report = hooks.get("on_progress") or (lambda progress: None)
    report(Progress("load", 0.0, "Loading models (the first run downloads them)"))
    load_models(model_set)
    report(Progress("denoise", 0.0, "Generating on ZeroGPU"))
    result = _generate_in_gpu_worker(request, model_set)
    report(Progress("compose", 1.0, "Done"))
    return result
