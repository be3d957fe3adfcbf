"""Backdrop's library: replace a product photo's background, locally or (later) via the hosted API.

    from pathlib import Path
    from pipeline import BgReplaceRequest, generate

    request = BgReplaceRequest(image=Path("bottle.jpg"), ref_image=Path("jungle.jpg"),
                               prompt="perfume bottle on a mossy rock in a jungle")
    result = generate(request)            # model set from BACKDROP_MODEL_SET, default "sdxl"
    result.images[0].save("out.png")

The UI (app.py), the CLI (python -m pipeline) and the REST endpoint are thin adapters over this API.
"""

from __future__ import annotations

import os

from .errors import BackdropError, GenerationCancelled, ModelLoadError
from .models import MODEL_SETS, LoadedModels, load_models
from .request import FIELDS, BgReplaceRequest, FieldSpec
from .result import BgReplaceResult, Intermediates, Progress
from .schedulers import SCHEDULER_NAMES

__all__ = [
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
    "Progress",
    "default_model_set",
    "generate",
    "load_models",
]


def default_model_set() -> str:
    """BACKDROP_MODEL_SET, or "sdxl"."""
    return os.environ.get("BACKDROP_MODEL_SET") or "sdxl"


def generate(request: BgReplaceRequest, *, model_set: str | None = None, **kwargs) -> BgReplaceResult:
    """Run ``request`` on this machine (see ``local.generate_local`` for progress and cancel hooks)."""
    from .local import generate_local

    return generate_local(request, model_set=model_set or default_model_set(), **kwargs)
