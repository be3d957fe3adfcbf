"""The one contract every backend keeps, so workflows and interfaces never ask which backend they hold."""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.contract.request import BgReplaceRequest
from pipeline.contract.result import BgReplaceResult, CancelCheck, ProgressCallback


class Backend(Protocol):
    """Runs a request somewhere and returns composited images.

    ``options`` names the keyword options this backend takes beyond the common hooks; the registry
    refuses any other with a ``BackdropError`` naming it, so a caller never meets a ``TypeError``.
    """

    name: str
    options: frozenset[str]

    def generate(
        self,
        request: BgReplaceRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        **options: Any,
    ) -> BgReplaceResult: ...
