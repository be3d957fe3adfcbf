"""Test pictures: the example renderer's products (with their true alpha) and reference scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "assets"))

from render import perfume_bottle, reference_scene  # noqa: E402

__all__ = ["iou", "perfume_bottle", "reference_scene"]


def iou(mask_a: Image.Image, mask_b: Image.Image, threshold: int = 128) -> float:
    a = np.asarray(mask_a.convert("L")) >= threshold
    b = np.asarray(mask_b.convert("L")) >= threshold
    return float((a & b).sum() / max((a | b).sum(), 1))
