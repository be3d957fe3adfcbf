"""Sizes in and out of the generator, and laying the untouched product back over the new background."""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

SOLID_ALPHA = 250  # alpha at or above this counts as solid product
SIZE_MULTIPLE = 8  # the VAE's downscale factor: latents need whole numbers
_MIN_GENERATION_SIDE = 64


def generation_size(width: int, height: int, side: int = 1024) -> tuple[int, int]:
    """About ``side``² pixels in the input's aspect ratio, both sides multiples of 8, neither past 2·side."""
    scale = math.sqrt(side * side / (width * height))
    scale = min(scale, 2 * side / max(width, height))  # very long panoramas: keep the long side sane
    return (_round_to_multiple(width * scale), _round_to_multiple(height * scale))


def _round_to_multiple(value: float) -> int:
    return max(_MIN_GENERATION_SIDE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Area averaging when shrinking (no aliasing), Lanczos when enlarging."""
    if image.size == size:
        return image
    shrinking = size[0] * size[1] < image.width * image.height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    resized = cv2.resize(np.asarray(image), size, interpolation=interpolation)
    return Image.fromarray(resized, mode=image.mode)


def cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to fill ``size``; a different aspect ratio is centre-cropped, never stretched."""
    target_ratio, ratio = size[0] / size[1], image.width / image.height
    if abs(ratio - target_ratio) > 0.01 * target_ratio:
        if ratio > target_ratio:
            width = round(image.height * target_ratio)
            box = ((image.width - width) // 2, 0, (image.width - width) // 2 + width, image.height)
        else:
            height = round(image.width / target_ratio)
            box = (0, (image.height - height) // 2, image.width, (image.height - height) // 2 + height)
        image = image.crop(box)
    return resize(image, size)


def composite_product(product: Image.Image, alpha: Image.Image, background: Image.Image) -> Image.Image:
    """The product (its own pixels, at its own size) laid over ``background`` through the soft ``alpha``.

    Where alpha is 255 the output is the input, bit for bit. On the soft edge the product's colour is
    first separated from the old backdrop it was photographed on, so no light (or dark) fringe of the old
    background survives around the product.
    """
    rgb = np.asarray(product.convert("RGB"))
    weights = np.asarray(alpha.convert("L"))
    new_background = np.asarray(cover(background.convert("RGB"), product.size))
    foreground = _decontaminated(rgb, weights)
    a = weights.astype(np.uint16)[..., None]
    blended = (foreground.astype(np.uint16) * a + new_background.astype(np.uint16) * (255 - a) + 127) // 255
    return Image.fromarray(blended.astype(np.uint8), mode="RGB")


def _decontaminated(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` with soft-edge pixels recoloured from the nearby solid product.

    A soft-edge pixel mixes product and old backdrop, and a mask model's soft edge often reaches a pixel
    or two into the backdrop. Taking those pixels' colour from the solid product next to them (rather
    than from the photo) means the old backdrop cannot show as a light or dark fringe; solid product
    pixels (alpha 255) are never touched.
    """
    edge = (alpha > 0) & (alpha < 255)
    if not edge.any():
        return rgb
    top, bottom, left, right = _bounding_box(edge, margin=96, shape=alpha.shape)
    crop_rgb = rgb[top:bottom, left:right].astype(np.float32)
    crop_edge = edge[top:bottom, left:right]
    solid = alpha[top:bottom, left:right] >= SOLID_ALPHA
    estimate = crop_rgb
    # Widest reach first, so the nearest solid colour found at the finest scale wins (wide feathering too).
    for sigma in (32.0, 8.0, 2.0):
        interior, has_interior = _local_mean(crop_rgb, solid, sigma)
        estimate = np.where(has_interior[..., None], interior, estimate)
    result = rgb.copy()
    patch = result[top:bottom, left:right]
    patch[crop_edge] = np.clip(estimate[crop_edge] + 0.5, 0, 255).astype(np.uint8)
    return result


def _local_mean(values: np.ndarray, where: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted mean of ``values`` over the pixels in ``where``, and where that mean exists."""
    weight = cv2.GaussianBlur(where.astype(np.float32), (0, 0), sigma)
    total = cv2.GaussianBlur(values * where[..., None], (0, 0), sigma)
    return total / np.maximum(weight, 1e-6)[..., None], weight > 1e-3


def _bounding_box(mask: np.ndarray, *, margin: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        max(rows[0] - margin, 0),
        min(rows[-1] + margin + 1, shape[0]),
        max(cols[0] - margin, 0),
        min(cols[-1] + margin + 1, shape[1]),
    )
