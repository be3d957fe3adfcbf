"""Renders docs/grounding.png, the README's picture of "Shadows, reflections and light": one product on one
scene, each shadow mode, a reflection and light match side by side. No model runs: the scene is drawn
(a warm wall over a table), and each tile goes through the very compositing step a result goes through.

    .venv/bin/python docs/render_grounding.py      # (re)writes docs/grounding.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "assets"))

from render import perfume_bottle, with_soft_shadow

from pipeline.contract.request import BgReplaceRequest
from pipeline.stages.prepare import compose_output, prepare_inputs

TILES = [  # (label, request settings)
    ("none (as before)", {}),
    ("contact", {"shadow": "contact"}),
    ("soft", {"shadow": "soft"}),
    ("hard", {"shadow": "hard"}),
    ("floating", {"shadow": "floating"}),
    ("original", {"shadow": "original"}),
    ("soft + reflection 0.4", {"shadow": "soft", "reflection": 0.4}),
    ("soft + light_match 1", {"shadow": "soft", "light_match": 1.0}),
]


def scene(width: int, height: int, horizon: int) -> Image.Image:
    """A warm, evenly lit wall down to ``horizon``, a pale wooden table top below it: a stand-in for a
    generated background."""
    y = np.arange(height, dtype=np.float32)[:, None, None]
    wall = np.array([214.0, 178.0, 140.0]) * (0.85 + 0.15 * (y / horizon))
    table = np.array([196.0, 160.0, 120.0]) * (0.9 + 0.1 * (y - horizon) / max(1, height - horizon))
    pixels = np.where(y < horizon, wall, table) * np.ones((1, width, 1))
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def render(path: Path = ROOT / "docs" / "grounding.png", width: int = 300, height: int = 400) -> Path:
    photo, alpha = perfume_bottle(width, height)
    shot, _ = with_soft_shadow(photo, alpha, darkness=0.45)  # shot on white with its own soft shadow
    base = int(np.flatnonzero((np.asarray(alpha) >= 250).any(axis=1))[-1])
    background = scene(width, height, horizon=base - height // 12)
    tiles = []
    for label, settings in TILES:
        request = BgReplaceRequest(image=shot, ref_image=background, prompt="on a table", mask=alpha,
                                   **settings)
        prepared = prepare_inputs(request, native_resolution=256)
        tiles.append((label, compose_output(request, prepared, background)))
    return _sheet(tiles, path)


def _sheet(tiles: list[tuple[str, Image.Image]], path: Path, columns: int = 4) -> Path:
    width, height = tiles[0][1].size
    caption = 26
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for index, (label, image) in enumerate(tiles):
        x, y = (index % columns) * width, (index // columns) * (height + caption)
        sheet.paste(image, (x, y + caption))
        draw.text((x + 8, y + 4), label, fill=(20, 20, 20), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


if __name__ == "__main__":
    print(render())
