"""Backdrop's library: replace a product photo's background, locally or through the hosted API.

    from pathlib import Path
    from pipeline import BgReplaceRequest, generate

    request = BgReplaceRequest(image=Path("assets/product-perfume.jpg"), ref_image=Path("assets/scene-jungle.jpg"),
                               prompt="perfume bottle on a mossy rock in a jungle")
    result = generate(request)            # local; model set from BACKDROP_MODEL_SET, default "sdxl"
    result = generate(request, backend="hosted")   # the hosted API, key from SEGMIND_API_KEY
    result.images[0].save("out.png")

The package is layered (README, "How the code is laid out"); each layer imports only from those below it:

    interfaces/   the CLI (python -m pipeline), the REST endpoint, what the studio (app.py) needs
    workflows/    sweeps, batches, presets, saving outputs and their metadata, the GPU queue
    backends/     local (diffusers) and hosted, behind one contract
    stages/       masking, edges, compositing: what runs before and after generation
    contract/     the request and its fields, the result, errors, choices, settings, image decoding

This module re-exports the names users need; everything else is imported from its layer.
"""

from __future__ import annotations

from pipeline.backends import generate
from pipeline.backends.local.models import LoadedModels, default_model_set, load_models
from pipeline.contract.choices import BACKENDS, MODEL_SETS, SCHEDULER_NAMES
from pipeline.contract.errors import BackdropError, GenerationCancelled, ModelLoadError, NoGpu, OutOfMemory
from pipeline.contract.request import FIELDS, BgReplaceRequest, FieldSpec
from pipeline.contract.result import BgReplaceResult, Intermediates, Progress

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
