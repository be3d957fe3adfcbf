"""Draws docs/framing.png, the README's "Framing" picture: one product on three canvases, as the studio's
Framing preview shows it (checkerboard = the new scene to be generated, magenta = the padded box).

    .venv/bin/python docs/make_framing_picture.py

The product is the example running shoe drawn by assets/render.py, with its true alpha as the mask, so the
picture needs no model and carries no third-party rights.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "assets")]

from render import running_shoe

from pipeline.stages.framing import framing_preview

CANVASES = (  # canvas, padding, placement: the README's three examples
    ("marketplace-square", 0.075, "center"),
    ("social-portrait", 0.1, "bottom"),
    ("web-banner", 0.1, "left"),
)
HEIGHT = 360  # every preview this tall, side by side
GAP, CAPTION = 24, 44


def main(out: Path = ROOT / "docs" / "framing.png") -> Path:
    photo, alpha = running_shoe(1024, 683)
    previews = [framing_preview(photo, alpha, "u2netp", canvas, padding, placement, side=1024)
                for canvas, padding, placement in CANVASES]
    previews = [preview.resize((round(preview.width * HEIGHT / preview.height), HEIGHT), Image.Resampling.LANCZOS)
                for preview in previews]
    source = photo.resize((round(photo.width * HEIGHT / photo.height), HEIGHT), Image.Resampling.LANCZOS)
    tiles = [(source, "the photo")] + [(preview, f"{canvas}, padding {padding:g}, {placement}")
                                       for preview, (canvas, padding, placement) in zip(previews, CANVASES)]
    width = sum(tile.width for tile, _ in tiles) + GAP * (len(tiles) + 1)
    sheet = Image.new("RGB", (width, HEIGHT + CAPTION + GAP), "white")
    draw, font, x = ImageDraw.Draw(sheet), _font(15), GAP
    for tile, caption in tiles:
        sheet.paste(tile, (x, GAP))
        draw.rectangle((x - 1, GAP - 1, x + tile.width, GAP + tile.height), outline=(160, 160, 160))
        draw.text((x, GAP + HEIGHT + 10), caption, fill="black", font=font)
        x += tile.width + GAP
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


if __name__ == "__main__":
    print(main())
