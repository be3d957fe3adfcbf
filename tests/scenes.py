"""Test pictures: the example renderer's products (with their true alpha) and reference scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from render import perfume_bottle, reference_scene  # assets/render.py: assets/ is on pytest's pythonpath

__all__ = ["camera_photo", "iou", "perfume_bottle", "reference_scene", "small_asset"]


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
