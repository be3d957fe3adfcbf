"""The ``canvas`` field's values: ``input``, ``WIDTHxHEIGHT`` or a named size (README, "Framing").

Parsing lives in the contract layer, not with the placement maths in ``stages.framing``: a request checks its
canvas when it is made, so ``12x`` is refused (exit 2, HTTP 400) before any photo is decoded or masked.
Standard library only, like ``choices``: the CLI's --help lists the names without loading anything heavy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.contract.errors import BackdropError
from pipeline.contract.images import max_pixels
from pipeline.contract.settings import setting

INPUT_CANVAS = "input"  # the photo's own size and framing: no placement at all
MIN_CANVAS_SIDE = 64
MAX_CANVAS_SIDE = 8192
_SIZE = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class NamedCanvas:
    width: int
    height: int
    use: str
    source: str  # where the size comes from, so a user can check it is still what the platform asks


# The README's table is made from this one (tests/test_framing.py checks they agree).
NAMED_CANVASES: dict[str, NamedCanvas] = {
    "marketplace-square": NamedCanvas(
        2000, 2000, "marketplace main image (Amazon, eBay, Etsy)",
        "Amazon Seller Central, Product image requirements: 1000 px or more on the longest side for zoom, "
        "the product filling 85% of the frame; 2000 px squares satisfy every large marketplace's zoom"),
    "shopify-square": NamedCanvas(
        2048, 2048, "Shopify store product image",
        "Shopify Help Center, Product media: 2048 x 2048 px recommended for square product photos"),
    "social-portrait": NamedCanvas(
        1080, 1350, "4:5 social feed post (Instagram, Facebook)",
        "Instagram Help Center: portrait posts are 4:5, shown at 1080 x 1350 px"),
    "story": NamedCanvas(
        1080, 1920, "9:16 story or reel cover",
        "Instagram Help Center: stories are 9:16, 1080 x 1920 px"),
    "web-banner": NamedCanvas(
        1920, 1080, "16:9 web page banner or hero image",
        "Full HD (ITU-R BT.709): 1920 x 1080, the common width of a full-width desktop banner"),
}


def user_canvases_file() -> Path:
    """Where users name their own sizes: BACKDROP_CANVASES, else beside their presets in ~/.config/backdrop."""
    return Path(setting("BACKDROP_CANVASES"))


def canvas_sizes() -> dict[str, tuple[int, int]]:
    """Every named size: the shipped ones, then the user's (``{"my-shop": "1600x1600"}``), which may replace
    a shipped name. Read on each call, so an edited file counts at once, as presets do."""
    sizes = {name: (canvas.width, canvas.height) for name, canvas in NAMED_CANVASES.items()}
    path = user_canvases_file()
    if not path.is_file():
        return sizes
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackdropError(f"{path}: cannot read it as JSON ({exc})", field="BACKDROP_CANVASES") from None
    if not isinstance(data, dict):
        raise BackdropError(f'{path}: must be a JSON object of names and sizes, like {{"my-shop": "1600x1600"}}',
                            field="BACKDROP_CANVASES")
    for name, size in data.items():
        key = str(name).strip().lower()
        if not _NAME.match(key) or key == INPUT_CANVAS:
            raise BackdropError(f"{path}: {name!r} is not a usable name; use up to 40 letters, digits, '-' or '_' "
                                f"(and not {INPUT_CANVAS!r})", field="BACKDROP_CANVASES")
        try:
            sizes[key] = parse_size(size if isinstance(size, str) else "", field="canvas")
        except BackdropError as error:
            raise BackdropError(f"{path}: {name!r}: {error.detail}",
                                field="BACKDROP_CANVASES") from None
    return sizes


def allowed_canvases() -> str:
    """What ``canvas`` accepts, in words, for errors and help."""
    names = ", ".join(repr(name) for name in NAMED_CANVASES)
    return (f"{INPUT_CANVAS!r}, WIDTHxHEIGHT (each side {MIN_CANVAS_SIDE}..{MAX_CANVAS_SIDE}, at most "
            f"{max_pixels():,} pixels) or a named size ({names} or one of BACKDROP_CANVASES)")


def normalise_canvas(value: str) -> str:
    """The canvas as stored in a request: ``input``, ``2000x2000`` or a known name, lower case. Raises
    ``BackdropError`` naming ``canvas`` for anything else."""
    text = value.strip().lower()
    if text == INPUT_CANVAS:
        return text
    if _SIZE.match(text):
        width, height = parse_size(text, field="canvas")
        return f"{width}x{height}"
    if text in canvas_sizes():
        return text
    raise BackdropError(f"{value!r} is not a canvas; expected {allowed_canvases()}", field="canvas")


def canvas_size(canvas: str) -> tuple[int, int] | None:
    """The canvas's (width, height) in pixels; None for ``input`` (the photo's own size)."""
    text = normalise_canvas(canvas)
    if text == INPUT_CANVAS:
        return None
    return canvas_sizes().get(text) or parse_size(text, field="canvas")


def parse_size(text: str, *, field: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as two whole numbers, each side and the area within limits."""
    match = _SIZE.match(text)
    if not match:
        raise BackdropError(f"{text!r} is not WIDTHxHEIGHT (like 2000x2000); expected {allowed_canvases()}",
                            field=field)
    width, height = int(match.group(1)), int(match.group(2))
    if not (MIN_CANVAS_SIDE <= width <= MAX_CANVAS_SIDE and MIN_CANVAS_SIDE <= height <= MAX_CANVAS_SIDE):
        raise BackdropError(f"{width}x{height} is out of range; each side must be {MIN_CANVAS_SIDE}.."
                            f"{MAX_CANVAS_SIDE} pixels", field=field)
    if width * height > max_pixels():
        raise BackdropError(f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels():,} "
                            "(BACKDROP_MAX_PIXELS)", field=field)
    return width, height
