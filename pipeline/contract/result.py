"""What every backend (local GPU, hosted API) returns for a request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pipeline.contract.request import BgReplaceRequest


@dataclass(frozen=True)
class Intermediates:
    """The pictures between input and output, for the UI's debug view and for reuse across a sweep."""

    subject_alpha: Image.Image  # L, input size: 255 = product
    inpaint_mask: Image.Image  # L, generation size: 255 = regenerate
    canny: Image.Image  # RGB, generation size: what the ControlNet saw
    backgrounds: tuple[Image.Image, ...] = ()  # raw generator output, before the product is laid back
    grounding: tuple[Image.Image, ...] = ()  # each background's shadow/reflection layer over white (if asked)


@dataclass(frozen=True)
class BgReplaceResult:
    images: tuple[Image.Image, ...]
    seeds: tuple[int, ...]  # seeds[i] alone, with samples=1, remakes images[i]
    request: BgReplaceRequest
    timings: dict[str, float]  # seconds per stage, and "total"
    backend: str = "local"
    info: dict[str, Any] = field(default_factory=dict)  # model ids, device, sizes: never secrets
    intermediates: Intermediates | None = None

    def metadata(self, index: int | None = None) -> dict[str, Any]:
        """JSON-ready description of the run (of one image when ``index`` is given) for sidecars."""
        data: dict[str, Any] = {
            "request": self.request.settings(),
            "seeds": list(self.seeds),
            "backend": self.backend,
            "info": self.info,
            "timings": {stage: round(seconds, 4) for stage, seconds in self.timings.items()},
        }
        if self.request.sources:
            data["sources"] = dict(self.request.sources)
        if index is not None:
            data |= {"index": index, "seed": self.seeds[index]}
            if len(self.info.get("quality") or ()) > index:  # this image's own quality check, beside the run's
                data["quality"] = self.info["quality"][index]
        return data


@dataclass(frozen=True)
class Progress:
    """A progress report: ``stage`` is load, mask, denoise, detail or compose; ``fraction`` is 0..1 of that stage."""

    stage: str
    fraction: float
    message: str


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]
