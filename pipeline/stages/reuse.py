"""The reuse cache: work that related requests share (a sweep's cells, A/B, a catalogue with one reference)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.contract.request import BgReplaceRequest
from pipeline.stages.prepare import PreparedInputs, prepare_inputs


@dataclass
class Reuse:
    """Work that a run of related requests (a sweep, A/B, the cells of a grid) shares instead of redoing.

    Keys hold the very image objects they were made from (a sweep's requests share them), so an entry can
    never be mistaken for another image's. ``counts`` says how often each piece was really computed.
    """

    prepared: dict[tuple, tuple[Any, PreparedInputs]] = field(default_factory=dict)
    prompts: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    image_embeds: dict[tuple, tuple[Any, list[Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"prepare": 0, "prompt": 0, "image_embeds": 0})

    def prepare(self, request: BgReplaceRequest, native_resolution: int) -> PreparedInputs:
        key = (id(request.image), id(request.mask), request.mask_model, request.mask_grow, request.mask_feather,
               request.canny_low, request.canny_high, request.resolution or native_resolution, request.output_size,
               request.canvas, request.padding, request.placement,
               request.shadow == "original")  # only that mode needs the photo's shading
        if key not in self.prepared:
            self.counts["prepare"] += 1
            self.prepared[key] = ((request.image, request.mask), prepare_inputs(request, native_resolution))
        return self.prepared[key][1]
