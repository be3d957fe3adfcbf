"""Test pictures: the example renderer's products (with their true alpha) and reference scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from render import perfume_bottle, reference_scene  # assets/render.py: assets/ is on pytest's pythonpath

__all__ = ["camera_photo", "floating_product", "iou", "perfume_bottle", "product_with_shadow", "reference_scene",
           "small_asset", "standing_product"]


def iou(mask_a: Image.Image, mask_b: Image.Image, threshold: int = 128) -> float:
    a = np.asarray(mask_a.convert("L")) >= threshold
    b = np.asarray(mask_b.convert("L")) >= threshold
    return float((a & b).sum() / max((a | b).sum(), 1))


def small_asset(name: str, side: int = 320) -> Path:
    """An example image from assets/, shrunk to ``side`` px (cached): servers and batches under test do
    the same work per image at a fraction of the pixels."""
    root = Path(__file__).resolve().parent.parent
    target = root / ".cache" / "test-images" / f"{side}-{name}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(root / "assets" / name)
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        partial = target.with_name(target.name + ".part")
        image.save(partial, format="JPEG", quality=92)
        partial.replace(target)
    return target


def camera_photo(name: str, size: tuple[int, int] = (3000, 4000)) -> Path:
    """An example image from assets/ as a camera would deliver it: ``size`` pixels with sensor noise, a JPEG
    of a few MB (cached). What a user uploads, where the assets themselves are small and clean."""
    root = Path(__file__).resolve().parent.parent
    target = root / ".cache" / "test-images" / f"camera-{size[0]}x{size[1]}-{name}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(root / "assets" / name).convert("RGB").resize(size, Image.Resampling.LANCZOS)
        noise = np.random.default_rng(7).normal(0, 6, (size[1], size[0], 3)).astype(np.float32)
        pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        partial = target.with_name(target.name + ".part")
        Image.fromarray(pixels).save(partial, format="JPEG", quality=94)
        partial.replace(target)
    return target


# --- products for grounding (shadows, reflections, light): photos with a known ground and shadow ---------


def standing_product(width: int = 600, height: int = 800) -> tuple[Image.Image, Image.Image]:
    """A perfume bottle standing on a surface: its base on the line where a grey table top meets the wall."""
    photo, alpha = perfume_bottle(width, height)
    pixels, weight = np.asarray(photo, dtype=np.float32), np.asarray(alpha, dtype=np.float32)[..., None] / 255
    base = int(np.flatnonzero((np.asarray(alpha) >= 250).any(axis=1))[-1])
    backdrop = np.full_like(pixels, 245.0)
    backdrop[base:] = 205.0  # the table top, from the bottle's base down
    out = pixels * weight + backdrop * (1 - weight)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8)), alpha


def floating_product(width: int = 600, height: int = 600) -> tuple[Image.Image, Image.Image]:
    """A ring in mid-air on white: nothing under it for a third of the frame."""
    from render import gold_ring

    photo, alpha = gold_ring(width, height)
    shift = height // 6  # lifted: moved up, the bottom third left empty
    lifted_photo = Image.new("RGB", photo.size, (255, 255, 255))
    lifted_alpha = Image.new("L", alpha.size, 0)
    lifted_photo.paste(photo.crop((0, shift, width, height)), (0, 0))
    lifted_alpha.paste(alpha.crop((0, shift, width, height)), (0, 0))
    return lifted_photo, lifted_alpha


def product_with_shadow(width: int = 600, height: int = 800, darkness: float = 0.5
                        ) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """A bottle shot on a white sweep with a real soft shadow ``darkness`` deep at its core. Returns (photo,
    alpha, true shading: 0 lit .. 1 black, aligned with the photo)."""
    from render import with_soft_shadow

    photo, alpha = perfume_bottle(width, height)
    shadowed, shading = with_soft_shadow(photo, alpha, darkness)
    return shadowed, alpha, shading
