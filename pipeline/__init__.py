"""Backdrop's library: replace a product photo's background, locally or through the hosted API.

    from pathlib import Path
    from pipeline import BgReplaceRequest, generate

    request = BgReplaceRequest(image=Path("assets/product-perfume.jpg"), ref_image=Path("assets/scene-jungle.jpg"),
                               prompt="perfume bottle on a mossy rock in a jungle")
    result = generate(request)            # local; model set from BACKDROP_MODEL_SET, default "sdxl"
    result = generate(request, backend="hosted")   # the hosted API, key from SEGMIND_API_KEY
    result.images[0].save("out.png")

The studio (app.py), the CLI (python -m pipeline), batches (python -m pipeline batch) and the REST endpoint
(pipeline.rest) are thin adapters over this API.
"""

from __future__ import annotations

import os

from .errors import BackdropError, GenerationCancelled, ModelLoadError, NoGpu, OutOfMemory
from .models import MODEL_SETS, LoadedModels, load_models
from .request import FIELDS, BgReplaceRequest, FieldSpec
from .result import BgReplaceResult, Intermediates, Progress
from .schedulers import SCHEDULER_NAMES

__all__ = [
    "BACKENDS",
    "FIELDS",
    "MODEL_SETS",
    "SCHEDULER_NAMES",
    "BackdropError",
    "BgReplaceRequest",
    "BgReplaceResult",
    "FieldSpec",
    "GenerationCancelled",
    "Intermediates",
    "LoadedModels",
    "ModelLoadError",
    "NoGpu",
    "OutOfMemory",
    "Progress",
    "default_model_set",
    "generate",
    "load_models",
]


def default_model_set() -> str:
    """BACKDROP_MODEL_SET, or "sdxl"."""
    return os.environ.get("BACKDROP_MODEL_SET") or "sdxl"


BACKENDS = ("local", "hosted")


def generate(
    request: BgReplaceRequest,
    *,
    backend: str = "local",
    model_set: str | None = None,
    api_key: str | None = None,
    **hooks,
) -> BgReplaceResult:
    """Run ``request`` on this machine (``backend="local"``) or on the hosted API (``"hosted"``, key from
    ``api_key`` or SEGMIND_API_KEY). ``hooks``: ``on_progress``, ``should_cancel``, and for local runs
    ``models`` (an already loaded ``LoadedModels``)."""
    if backend == "hosted":
        from .hosted import generate_hosted

        return generate_hosted(request, api_key=api_key, **hooks)
    if backend != "local":
        raise BackdropError(f"{backend!r} is unknown; expected one of {', '.join(BACKENDS)}", field="backend")
    from .local import generate_local

    return generate_local(request, model_set=model_set or default_model_set(), **hooks)
