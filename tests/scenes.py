"""Product shots and reference backgrounds rendered in code, with the product's true alpha."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_SUPERSAMPLE = 4


def perfume_bottle(width: int = 512, height: int = 512) -> tuple[Image.Image, Image.Image]:
    """A shaded amber bottle with a metal cap, centred on a white studio backdrop; (photo, true alpha)."""
    big_w, big_h = width * _SUPERSAMPLE, height * _SUPERSAMPLE
    unit = min(big_w, big_h)
    cx, cy = big_w // 2, big_h // 2
    body = (cx - unit * 0.22, cy - unit * 0.12, cx + unit * 0.22, cy + unit * 0.38)
    neck = (cx - unit * 0.06, cy - unit * 0.22, cx + unit * 0.06, cy - unit * 0.10)
    cap = (cx - unit * 0.10, cy - unit * 0.38, cx + unit * 0.10, cy - unit * 0.21)

    shape = Image.new("L", (big_w, big_h), 0)
    draw = ImageDraw.Draw(shape)
    draw.rounded_rectangle(body, radius=unit * 0.06, fill=255)
    draw.rectangle(neck, fill=255)
    draw.rounded_rectangle(cap, radius=unit * 0.02, fill=255)

    x = np.linspace(-1.0, 1.0, big_w)[None, :]
    shading = 0.55 + 0.45 * np.cos(np.clip(x * 2.2, -np.pi / 2, np.pi / 2))  # rounded glass catches light
    amber = np.stack([200 * shading, 120 * shading, 40 * shading], axis=-1) * np.ones((big_h, 1, 1))
    metal = np.stack([170 + 60 * shading, 170 + 60 * shading, 180 + 60 * shading], axis=-1) * np.ones((big_h, 1, 1))
    is_cap = np.zeros((big_h, big_w), bool)
    is_cap[int(cap[1]):int(cap[3]), int(cap[0]):int(cap[2])] = True
    colour = np.where(is_cap[..., None], metal, amber)
    label = np.zeros((big_h, big_w), bool)
    label[int(cy + unit * 0.05):int(cy + unit * 0.22), int(cx - unit * 0.15):int(cx + unit * 0.15)] = True
    colour = np.where(label[..., None], np.array([240.0, 232.0, 210.0]), colour)

    weight = np.asarray(shape, dtype=np.float32)[..., None] / 255.0
    photo = colour * weight + 255.0 * (1.0 - weight)
    photo_img = Image.fromarray(np.clip(photo + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    return (
        photo_img.resize((width, height), Image.Resampling.BOX),
        shape.resize((width, height), Image.Resampling.BOX),
    )


def reference_scene(kind: str = "jungle", width: int = 384, height: int = 384, seed: int = 0) -> Image.Image:
    """A textured stand-in for a reference photo: foliage greens, marble greys or warm wood."""
    rng = np.random.default_rng(seed)
    palettes = {
        "jungle": ([20, 70, 25], [90, 160, 60]),
        "marble": ([200, 200, 205], [120, 120, 130]),
        "wood": ([120, 70, 30], [190, 130, 70]),
    }
    low, high = (np.array(c, dtype=np.float32) for c in palettes[kind])
    noise = Image.fromarray((rng.random((height // 8, width // 8)) * 255).astype(np.uint8))
    smooth = np.asarray(noise.resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(3)))
    t = (smooth.astype(np.float32) / 255.0)[..., None]
    return Image.fromarray(np.clip(low + (high - low) * t, 0, 255).astype(np.uint8), mode="RGB")


def iou(mask_a: Image.Image, mask_b: Image.Image, threshold: int = 128) -> float:
    a = np.asarray(mask_a.convert("L")) >= threshold
    b = np.asarray(mask_b.convert("L")) >= threshold
    return float((a & b).sum() / max((a | b).sum(), 1))
