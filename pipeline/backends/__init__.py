"""Where a request runs: this machine (``local``) or the hosted bg-replace API (``hosted``).

Each backend keeps the ``Backend`` contract (``base.py``) and is listed once in ``_REGISTRY``; a new one
(another hosted service, a remote GPU box) is a module here and a line there. Backends are imported only
when first used: the local one pulls in torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.backends.base import Backend
from pipeline.contract.choices import BACKENDS
from pipeline.contract.errors import BackdropError
from pipeline.contract.request import BgReplaceRequest
from pipeline.contract.result import BgReplaceResult

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
