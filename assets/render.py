"""Renders Backdrop's example images: products on a studio backdrop (with their true alpha) and
reference scenes. Everything is drawn in code, so the examples carry no third-party rights.

    python assets/render.py          # (re)writes the JPEGs in assets/
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_SS = 4  # supersampling: shapes are drawn 4x larger and averaged down, for clean anti-aliased edges


def _canvas(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    shape = Image.new("L", (width * _SS, height * _SS), 0)
    return shape, ImageDraw.Draw(shape)


def _finish(colour: np.ndarray, shape: Image.Image, size: tuple[int, int],
            backdrop: tuple[int, int, int] = (255, 255, 255)) -> tuple[Image.Image, Image.Image]:
    """Lay ``colour`` over a plain studio backdrop through ``shape``; return (photo, true alpha)."""
    weight = np.asarray(shape, dtype=np.float32)[..., None] / 255.0
    photo = colour * weight + np.array(backdrop, dtype=np.float32) * (1.0 - weight)
    big = Image.fromarray(np.clip(photo + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    return big.resize(size, Image.Resampling.BOX), shape.resize(size, Image.Resampling.BOX)


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height * _SS, 0:width * _SS].astype(np.float32)
    return x / (width * _SS), y / (height * _SS)


def _cylinder_shading(x: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """Light falling on a vertical cylinder: bright down the middle, darker towards both sides."""
    t = np.clip((x - centre) / half_width, -1.0, 1.0)
    return 0.55 + 0.45 * np.clip(np.cos(t * np.pi / 2), 0.0, 1.0) ** 0.7


def perfume_bottle(width: int = 768, height: int = 1024) -> tuple[Image.Image, Image.Image]:
    shape, draw = _canvas(width, height)
    big_w, big_h = width * _SS, height * _SS
    unit = min(big_w, big_h)
    cx, cy = big_w // 2, big_h // 2
    body = (cx - unit * 0.22, cy - unit * 0.12, cx + unit * 0.22, cy + unit * 0.38)
    neck = (cx - unit * 0.06, cy - unit * 0.22, cx + unit * 0.06, cy - unit * 0.10)
    cap = (cx - unit * 0.10, cy - unit * 0.38, cx + unit * 0.10, cy - unit * 0.21)
    draw.rounded_rectangle(body, radius=unit * 0.06, fill=255)
    draw.rectangle(neck, fill=255)
    draw.rounded_rectangle(cap, radius=unit * 0.02, fill=255)

    x, y = _grid(width, height)
    shade = _cylinder_shading(x, 0.5, 0.22 * unit / big_w)[..., None]
    amber = np.array([200.0, 120.0, 40.0]) * shade
    metal = np.array([170.0, 170.0, 180.0]) + 60.0 * shade
    px, py = x * big_w, y * big_h
    is_cap = (py < cap[3]) & (py >= cap[1])
    label = (py > cy + unit * 0.05) & (py < cy + unit * 0.22) & (np.abs(px - cx) < unit * 0.15)
    colour = np.where(is_cap[..., None], metal, amber)
    colour = np.where(label[..., None], np.array([240.0, 232.0, 210.0]), colour)
    return _finish(colour, shape, (width, height))


def running_shoe(width: int = 1024, height: int = 683) -> tuple[Image.Image, Image.Image]:
    shape, draw = _canvas(width, height)
    s = width * _SS / 100.0  # drawing units: 1 = 1% of the width
    lift = 14  # the outline below is drawn 14 units lower than it sits in the frame
    sole = [(10, 62), (88, 62), (92, 66), (90, 72), (12, 72), (8, 67)]
    upper = [(12, 62), (14, 40), (24, 30), (38, 30), (46, 38), (62, 44), (80, 50), (89, 57), (88, 62)]
    for outline in (sole, upper):
        draw.polygon([(px * s, (py - lift) * s) for px, py in outline], fill=255)

    x, y = _grid(width, height)
    px, py = x * 100, y * 100 * height / width + lift
    colour = np.zeros(x.shape + (3,), np.float32) + np.array([40.0, 90.0, 200.0])
    colour *= (0.75 + 0.25 * (1 - (py - 30) / 40)).clip(0.6, 1.0)[..., None]  # light from above
    in_sole = py >= 62
    colour[in_sole] = np.array([235.0, 235.0, 230.0]) - 25.0 * ((py[in_sole] - 62) / 10)[..., None]
    stripe = (np.abs((py - 52) - (px - 30) * -0.35) < 2.2) & (px > 22) & (px < 70) & ~in_sole
    colour[stripe] = (245.0, 245.0, 245.0)
    laces = (np.abs(py - 36 - (px - 26) * 0.45) < 0.8) & (np.mod(px, 4) < 2) & (px > 26) & (px < 44)
    colour[laces] = (250.0, 250.0, 250.0)
    return _finish(colour, shape, (width, height))


def gold_ring(width: int = 800, height: int = 800) -> tuple[Image.Image, Image.Image]:
    shape, draw = _canvas(width, height)
    big = width * _SS
    cx, cy = big / 2, height * _SS * 0.56
    outer = (cx - big * 0.30, cy - big * 0.17, cx + big * 0.30, cy + big * 0.17)
    inner = (cx - big * 0.25, cy - big * 0.12, cx + big * 0.25, cy + big * 0.12)
    draw.ellipse(outer, fill=255)
    draw.ellipse(inner, fill=0)
    gem = [(cx, cy - big * 0.34), (cx + big * 0.08, cy - big * 0.24), (cx, cy - big * 0.14),
           (cx - big * 0.08, cy - big * 0.24)]
    draw.polygon(gem, fill=255)
    draw.rectangle((cx - big * 0.03, cy - big * 0.18, cx + big * 0.03, cy - big * 0.13), fill=255)

    x, y = _grid(width, height)
    angle = np.arctan2((y * height * _SS - cy) / 0.17, (x * big - cx) / 0.30)
    gold = np.array([212.0, 168.0, 60.0])[None, None] * (0.65 + 0.35 * np.cos(angle - 2.2))[..., None]
    gold += 50.0 * np.exp(-((angle + 0.9) ** 2) / 0.02)[..., None]  # a specular highlight
    px, py = x * big, y * height * _SS
    in_gem = (np.abs(px - cx) / (big * 0.08) + np.abs(py - (cy - big * 0.24)) / (big * 0.10)) <= 1.0
    facet = np.where(px < cx, 0.85, 1.0) * np.where(py < cy - big * 0.24, 1.0, 0.8)
    gem_colour = np.array([190.0, 225.0, 250.0])[None, None] * facet[..., None]
    colour = np.where(in_gem[..., None], gem_colour, gold)
    return _finish(colour, shape, (width, height))


def wooden_chair(width: int = 768, height: int = 1024) -> tuple[Image.Image, Image.Image]:
    shape, draw = _canvas(width, height)
    s = width * _SS / 100.0
    parts = [
        (22, 10, 30, 90), (70, 10, 78, 90),  # back posts, down to the floor
        (22, 12, 78, 18), (22, 28, 78, 32), (22, 40, 78, 44),  # back rails
        (18, 52, 82, 60),  # seat
        (24, 60, 30, 118), (70, 60, 76, 118),  # front legs
        (28, 92, 72, 95),  # stretcher
    ]
    for left, top, right, bottom in parts:
        draw.rectangle((left * s, top * s, right * s, bottom * s), fill=255)
    shape = shape.crop((0, 0, width * _SS, height * _SS))

    x, y = _grid(width, height)
    grain = 0.85 + 0.15 * np.sin(x * 180 + 4 * np.sin(y * 23))
    colour = np.array([150.0, 95.0, 50.0])[None, None] * grain[..., None]
    seat = (y * 100 * height / width > 52) & (y * 100 * height / width < 60)
    colour[seat] *= 1.15
    return _finish(colour, shape, (width, height))


def with_soft_shadow(photo: Image.Image, alpha: Image.Image, darkness: float = 0.5
                     ) -> tuple[Image.Image, np.ndarray]:
    """``photo`` as if shot with a soft light from above: a blurred ellipse of shadow under and just behind
    the product's base, ``darkness`` deep at its core, on the backdrop only. Returns the photo and the
    shadow's true shading (0 = lit .. 1 = black, per pixel)."""
    width, height = photo.size
    weight = np.asarray(alpha, dtype=np.float32) / 255.0
    base = int(np.flatnonzero((weight >= 0.98).any(axis=1))[-1])
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot((x - width / 2) / (0.30 * width), (y - base + 0.01 * height) / (0.05 * height))
    shading = (darkness * np.clip(1.4 - distance, 0.0, 1.0) ** 1.5).astype(np.float32)  # full core, soft rim
    pixels = np.asarray(photo, dtype=np.float32) - 255.0 * ((1 - weight) * shading)[..., None]
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)), shading


def reference_scene(kind: str, width: int = 768, height: int = 768, seed: int = 0) -> Image.Image:
    """Stand-ins for reference photos: marble, wood, jungle foliage or a studio gradient."""
    return _SCENES[kind](width, height, np.random.default_rng(seed))


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int, blur: float) -> np.ndarray:
    noise = Image.fromarray((rng.random((max(2, height // cells), max(2, width // cells))) * 255).astype(np.uint8))
    smooth = noise.resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(smooth, dtype=np.float32) / 255.0


def _marble(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    turbulence = _smooth_noise(rng, width, height, 48, 8) * 6 + _smooth_noise(rng, width, height, 12, 2) * 1.5
    veins = np.abs(np.sin((x + y * 0.6) / 55.0 + turbulence)) ** 0.25
    base = np.array([236.0, 234.0, 230.0]) * (0.93 + 0.07 * veins)[..., None]
    vein = np.array([105.0, 105.0, 115.0])
    amount = (1 - veins)[..., None] ** 3
    return _to_image(base * (1 - amount) + vein * amount)


def _wood(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    plank = (y // (height / 5)).astype(int)
    offset = rng.random(6)[plank] * 40
    grain = np.sin((y + offset * 3) / 3.0 + _smooth_noise(rng, width, height, 32, 6) * 9) * 0.5 + 0.5
    tone = (np.array([150.0, 95.0, 55.0]) * (0.8 + 0.2 * grain)[..., None]
            * (0.9 + 0.1 * rng.random(6)[plank])[..., None])
    seams = (np.mod(y, height / 5) < 2)[..., None]
    return _to_image(np.where(seams, tone * 0.45, tone))


def _jungle(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    image = Image.fromarray(np.zeros((height, width, 3), np.uint8) + np.array([18, 45, 22], np.uint8))
    for _ in range(260):
        leaf = Image.new("L", (width, height), 0)
        cx, cy = rng.random() * width, rng.random() * height
        length, breadth = 40 + rng.random() * 120, 15 + rng.random() * 35
        ImageDraw.Draw(leaf).ellipse((cx - length, cy - breadth, cx + length, cy + breadth), fill=255)
        leaf = leaf.rotate(rng.random() * 180, center=(cx, cy))
        green = (int(30 + rng.random() * 60), int(90 + rng.random() * 110), int(25 + rng.random() * 50))
        image.paste(green, mask=leaf)
    return image.filter(ImageFilter.GaussianBlur(1.2))


def _studio(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot((x - width / 2) / width, (y - height * 0.35) / height)
    light = np.clip(1.0 - distance * 1.2, 0.0, 1.0)[..., None]
    return _to_image(np.array([70.0, 62.0, 58.0]) + np.array([150.0, 140.0, 130.0]) * light)


def _to_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), mode="RGB")


_SCENES = {"marble": _marble, "wood": _wood, "jungle": _jungle, "studio": _studio}
PRODUCTS = {"perfume": perfume_bottle, "shoe": running_shoe, "ring": gold_ring, "chair": wooden_chair}
SCENES = tuple(_SCENES)


ASSETS = Path(__file__).resolve().parent


def main(folder: Path = ASSETS) -> None:
    for name, render in PRODUCTS.items():
        render()[0].save(folder / f"product-{name}.jpg", quality=92)
    for kind in SCENES:
        reference_scene(kind).save(folder / f"scene-{kind}.jpg", quality=90)


if __name__ == "__main__":
    main()
