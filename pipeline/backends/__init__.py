"""Where a request runs: this machine (``local``) or the hosted bg-replace API (``hosted``).

Each backend keeps the ``Backend`` contract (``base.py``) and is listed once in ``_REGISTRY``; a new one
(another hosted service, a remote GPU box) is a module here and a line there. Backends are imported only
when first used: the local one pulls in torch and diffusers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pipeline.backends.base import Backend
from pipeline.contract.choices import BACKENDS
from pipeline.contract.errors import BackdropError
from pipeline.contract.request import BgReplaceRequest
from pipeline.contract.result import BgReplaceResult, Progress, ProgressCallback

# What ``runner`` returns: ``run(request, **hooks)``, hooks being ``should_cancel`` and ``reuse``.
Runner = Callable[..., BgReplaceResult]

# name -> (module, class): the module is imported on first use.
_REGISTRY: dict[str, tuple[str, str]] = {
    "local": ("pipeline.backends.local.backend", "LocalBackend"),
    "hosted": ("pipeline.backends.hosted", "HostedBackend"),
}
assert tuple(_REGISTRY) == BACKENDS, "contract.choices.BACKENDS lists the registry's names"

_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called ``name``, or a ``BackdropError`` naming the field and the known names."""
    if name not in _REGISTRY:
        raise BackdropError(f"{name!r} is unknown; expected one of {', '.join(BACKENDS)}", field="backend")
    if name not in _instances:
        module_name, class_name = _REGISTRY[name]
        _instances[name] = getattr(importlib.import_module(module_name), class_name)()
    return _instances[name]


def generate(request: BgReplaceRequest, *, backend: str = "local", **options: Any) -> BgReplaceResult:
    """Run ``request`` on ``backend``. Options every backend takes: ``on_progress``, ``should_cancel``,
    ``reuse`` (a ``stages.reuse.Reuse`` shared across requests). The local backend also takes ``models``
    (already loaded ``LoadedModels``) and ``model_set``; the hosted one ``api_key`` and ``settings``."""
    chosen = get_backend(backend)
    common = {"on_progress", "should_cancel", "reuse"}
    unknown = sorted(set(options) - common - chosen.options)
    if unknown:
        takes = ", ".join(sorted(chosen.options)) or "none"
        raise BackdropError(f"the {backend} backend does not take {', '.join(unknown)} (its own options: {takes})",
                            field="backend")
    return chosen.generate(request, **options)


def runner(
    backend: str = "local",
    *,
    model_set: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    memory_mode: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Runner:
    """``run(request, **hooks) -> result`` on ``backend``, for running many requests: the local backend's
    models are loaded once, here, up front (their loading reported to ``on_progress`` as stage "load"), so
    the first request does not pay for it. The hosted backend has no models: the model set and runtime
    choices do not apply to it and are left unused."""
    get_backend(backend)  # an unknown name is refused before anything loads
    if backend != "local":
        return lambda request, **hooks: generate(request, backend=backend, on_progress=on_progress, **hooks)
    from pipeline.backends.local.models import default_model_set, load_models

    def say(message: str) -> None:
        if on_progress is not None:
            on_progress(Progress("load", 0.0, message))

    models = load_models(model_set or default_model_set(), device=device, dtype=dtype, memory_mode=memory_mode,
                         on_progress=say)
    return lambda request, **hooks: generate(request, models=models, on_progress=on_progress, **hooks)
