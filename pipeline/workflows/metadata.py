"""Settings that travel with every saved image: a PNG text chunk or a JPEG comment (and the .json
sidecar beside it), read back to restore a request exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from pipeline.contract.errors import BackdropError
from pipeline.contract.images import to_rgb
from pipeline.contract.request import FIELDS, IMAGE_FIELDS, loads_json

KEY = "backdrop"  # PNG text chunk name; JPEG comments start with this word


def encode_with_metadata(image: Image.Image, image_format: str, metadata: dict[str, Any], *,
                         quality: int = 95) -> bytes:
    """The image as PNG (settings in a text chunk) or JPEG (settings in its comment)."""
    text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))
    buffer = io.BytesIO()
    if image_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(KEY, text)
        image.save(buffer, format="PNG", pnginfo=info)
    else:
        to_rgb(image).save(buffer, format="JPEG", quality=quality, subsampling=0,
                           comment=f"{KEY} {text}".encode())
    return buffer.getvalue()


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata Backdrop wrote into ``path`` (or its sidecar); a clear error when there is none."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            embedded = image.info.get(KEY) or image.info.get("comment")
    except (OSError, ValueError):
        embedded = None
    if isinstance(embedded, bytes):
        embedded = embedded.decode("utf-8", "replace")
    if isinstance(embedded, str) and embedded.startswith(f"{KEY} "):
        embedded = embedded[len(KEY) + 1:]
    for text in (embedded, _sidecar_text(path)):
        if text:
            try:
                data = loads_json(text, field="settings")
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("request"), dict):
                return data
    raise BackdropError(f"{path.name} carries no Backdrop settings (only images Backdrop saved do)", field="settings")


def _sidecar_text(path: Path) -> str | None:
    sidecar = path.with_suffix(".json")
    return sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None


def settings_from_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The request's settings, checked field by field, with the seed that made this very image."""
    recorded = metadata["request"]
    settings = {}
    for name, spec in FIELDS.items():
        if name in IMAGE_FIELDS or name not in recorded:
            continue
        settings[name] = spec.coerce(recorded[name])
    if metadata.get("seed") is not None:  # this image's own seed, checked like the request's (not 10**30, -5 or true)
        settings["seed"] = FIELDS["seed"].coerce(metadata["seed"])
    return settings
