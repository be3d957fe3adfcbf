"""Canny edges of the product alone, for the ControlNet. OpenCV directly: controlnet-aux's package import
pulls in every detector and fails without a working torchvision (README, "How an image is made"); its
canny is cv2.Canny anyway."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def subject_canny(image: Image.Image, alpha: Image.Image, *, low: int = 100, high: int = 200) -> Image.Image:
    """Edges of the product with the background flattened, as the RGB image the ControlNet expects.

    The background is flattened to black or white, whichever contrasts more with the product, so the
    silhouette always yields an edge and nothing of the old backdrop (texture, shadows) does.
    """
    # Greyscale is a weighted sum of the channels, so flattening the grey image equals greying the
    # flattened colour one: one channel of float maths instead of three. The maths runs in place: a new
    # 1 MP float array costs fresh pages the kernel must zero, often more than the arithmetic on it.
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    weight = np.asarray(alpha if alpha.mode == "L" else alpha.convert("L"), dtype=np.float32)
    weight *= 1.0 / 255.0
    gray_product = float((gray * weight).sum() / max(float(weight.sum()), 1.0))
    flat_value = 0.0 if gray_product > 127 else 255.0
    gray -= flat_value
    gray *= weight
    gray += flat_value
    gray += 0.5
    edges = cv2.Canny(np.clip(gray, 0, 255, out=gray).astype(np.uint8), low, high)
    return Image.fromarray(cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB), mode="RGB")
