"""Test pictures: the example renderer's products (with their true alpha) and reference scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "assets"))

from render import perfume_bottle, reference_scene  # noqa: E402

__all__ = ["iou", "perfume_bottle", "reference_scene", "small_asset"]


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
