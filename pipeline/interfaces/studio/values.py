"""The studio's widget values as a request, A/B changes over it, and the names its outputs are saved under."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from pipeline.contract.errors import BackdropError
from pipeline.contract.request import FIELDS, BgReplaceRequest, loads_json
from pipeline.interfaces.studio.screen import SETTING_INPUTS, from_screen


def build_request(values: dict[str, Any]) -> BgReplaceRequest:
    """A request from the studio's inputs: uploads are file paths, read by our own decoder (EXIF,
    transparency, clear errors)."""
    if not values.get("image"):
        raise BackdropError("upload a product photo", field="image")
    if not values.get("ref_image"):
        raise BackdropError("upload a reference picture of the setting", field="ref_image")
    fields = from_screen({name: value for name, value in values.items() if name in FIELDS})
    for name in ("image", "ref_image", "mask"):
        if fields.get(name):
            fields[name] = Path(fields[name])
    return BgReplaceRequest.from_dict(fields)


def overrides(base: BgReplaceRequest, text: str | None, field: str) -> BgReplaceRequest:
    """``base`` with an A/B box's JSON changes (``{"cn_weight": 0.5}``) applied; ``field`` names the box."""
    try:
        changes = loads_json(text or "{}", field=field)
    except ValueError as exc:
        raise BackdropError(f"not valid JSON ({exc}); write e.g. {{\"cn_weight\": 0.5}}", field=field) from None
    if not isinstance(changes, dict):
        raise BackdropError('must be a JSON object, e.g. {"cn_weight": 0.5}', field=field)
    unknown = sorted(set(changes) - set(SETTING_INPUTS))
    if unknown:
        raise BackdropError(f"unknown setting {unknown[0]!r}; allowed: {', '.join(SETTING_INPUTS)}", field=field)
    return base.replace(**changes)


def output_stem(upload: str) -> str:
    """``perfume-20261129-101500``: the product photo's own name (Gradio keeps an upload's file name) and
    the time, so a folder of results still says which product each one shows."""
    product = re.sub(r"[^\w.-]+", "-", Path(upload).stem).strip("-.")[:80] or "backdrop"
    return f"{product}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name-2``, ``name-3``... if a comparison in the same second took it."""
    folder, number = parent / name, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            number += 1
            folder = parent / f"{name}-{number}"
