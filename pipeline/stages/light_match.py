"""Light match: the one option that changes the product's pixels, only when asked (``light_match`` > 0).

The product was lit to look right against the backdrop it was photographed on. Its new scene's light has
another colour and brightness; light match scales the product's light per channel by how the scene around
the product differs from the old backdrop around it, tempered and bounded, then by the requested strength.
It is one global, smooth per-channel curve (a lookup table): no repainting, no new detail, and 0 leaves the
product bit for bit as it was. How much the product changed is measured and reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from pipeline.stages.compose import SoftEdge
from pipeline.stages.grounding import working_scale

# Full strength moves the product's white balance halfway (in log light) to the scene's, and its exposure
# less: a studio's white sweep is far brighter than any scene, but the product was exposed for itself.
COLOUR_TEMPER, EXPOSURE_TEMPER = 0.5, 0.3
MIN_GAIN, MAX_GAIN = 0.5, 2.0  # at most one stop darker or brighter per channel, whatever the scene
_GAMMA = 2.2
_LUMA = np.array([0.2126, 0.7152, 0.0722])  # linear light's luminance weights
_RING = 0.08  # the surroundings that light the product: a band this fraction of the frame around it
_MEAN_PIXELS = 384 * 384  # mean colours need few pixels: light and change are measured on about this many


@dataclass(frozen=True)
class LightMatch:
    """The matched product and its soft edge's colours, and how much the product changed: the mean absolute
    difference over its solid pixels, in 8-bit levels (``product_change``)."""

    product: np.ndarray
    edge: SoftEdge
    gains: tuple[float, float, float]  # per channel, in linear light
    change: float


def light_gains(photo: np.ndarray, alpha: np.ndarray, scene: np.ndarray, strength: float) -> tuple[float, ...]:
    """Per-channel gains (linear light) that move the product toward the scene's light: the ratio of the
    scene around the product to the old backdrop around it, split into colour and brightness, each
    tempered, bounded, and raised to ``strength``."""
    step = _step(alpha.shape)
    small_alpha = alpha[::step, ::step]
    radius = max(2, round(max(small_alpha.shape) * _RING))
    # Distance to the product, not a dilation: a disc this wide would cost seconds to dilate with.
    distance = cv2.distanceTransform((small_alpha == 0).view(np.uint8), cv2.DIST_L2, 3)
    ring = (distance > 0) & (distance <= radius)
    if not ring.any():
        return (1.0, 1.0, 1.0)
    old = _linear(photo[::step, ::step][ring]).mean(axis=0)
    new = _linear(scene[::step, ::step][ring]).mean(axis=0)
    old, new = np.maximum(old, 1e-4), np.maximum(new, 1e-4)
    brightness = float(new @ _LUMA) / float(old @ _LUMA)
    colour = (new / old) / brightness
    ratio = np.clip(colour ** COLOUR_TEMPER * brightness ** EXPOSURE_TEMPER, MIN_GAIN, MAX_GAIN)
    return tuple(float(gain) for gain in ratio ** strength)


def match_light(photo: np.ndarray, alpha: np.ndarray, edge: SoftEdge, scene: np.ndarray,
                strength: float) -> LightMatch:
    """``photo`` (the product's RGB, output size) and its ``edge`` colours under the ``scene``'s light
    (the new background, RGB, output size), by ``strength`` (0..1)."""
    gains = light_gains(photo, alpha, scene, strength)
    table = _curve(gains)
    matched = cv2.LUT(photo, table)
    colour = cv2.LUT(edge.colour.reshape(-1, 1, 3), table).reshape(-1, 3) if edge.colour.size else edge.colour
    return LightMatch(product=matched, edge=replace(edge, colour=colour), gains=gains,
                      change=_mean_change(photo, matched, alpha))


def _linear(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) / 255.0) ** _GAMMA


def _curve(gains: tuple[float, ...]) -> np.ndarray:
    """A (256, 1, 3) lookup table: each channel's value scaled by its gain in linear light, clipped."""
    levels = np.arange(256, dtype=np.float32) / 255.0
    channels = [np.clip(255.0 * (levels ** _GAMMA * gain) ** (1 / _GAMMA) + 0.5, 0, 255) for gain in gains]
    return np.stack(channels, axis=-1).astype(np.uint8).reshape(256, 1, 3)


def _step(shape: tuple[int, ...]) -> int:
    """Every how many pixels to read for a mean over about ``_MEAN_PIXELS``: a strided view costs nothing,
    where resizing a 24 MP photo costs a tenth of a second, and a mean needs no anti-aliasing."""
    return max(1, math.ceil(1 / working_scale(shape, _MEAN_PIXELS)))


def _mean_change(before: np.ndarray, after: np.ndarray, alpha: np.ndarray) -> float:
    step = _step(alpha.shape)
    solid = alpha[::step, ::step] >= 250
    if not solid.any():
        return 0.0
    difference = np.abs(before[::step, ::step][solid].astype(np.float32) - after[::step, ::step][solid])
    return round(float(difference.mean()), 2)
