"""The photo's own shadow (shadow mode ``original``): most product shots are taken on a white or grey sweep
with a real, correct shadow. This finds it as *shading* (how much darker each backdrop pixel is than the
backdrop) and carries it onto the new background, moved and scaled with the product.

``photo_shading`` works on the input photo and returns a map aligned with it; ``place_shading`` carries
that map through the same affine transform as the product (today the scale from photo to output; with
framing, the product's placement on its canvas) to the output's working size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.contract.errors import BackdropError
from pipeline.stages.grounding import footing, shrink, smooth, working_scale

BORDER = 0.04  # the frame's outer strip, as a fraction of its short side, that shows the bare backdrop
PLAIN_SHARE = 0.85  # this share of the strip within PLAIN_LEVELS of its median: a plain backdrop
PLAIN_LEVELS = 30
DARKEST_BACKDROP = 70  # below this (8-bit luminance) a shadow cannot be told from the backdrop
NOISE = 0.04  # shading under this is sensor noise or JPEG, not shadow, when finding the shadow's region


@dataclass(frozen=True)
class PhotoShading:
    """The photo's shading, 0 (backdrop as lit) .. 1 (black), at ``scale`` times the photo's size."""

    shading: np.ndarray  # float32, (round(h·scale), round(w·scale))
    photo_size: tuple[int, int]  # (width, height)

    @property
    def scale(self) -> float:
        return self.shading.shape[1] / self.photo_size[0]


def photo_shading(photo: np.ndarray, alpha: np.ndarray) -> PhotoShading:
    """The shading of ``photo``'s backdrop (RGB array) around the product (``alpha``, L array) that belongs
    to the product's shadow: connected to the product and near it, with the backdrop's own gradients and
    vignetting taken out. A photo without a plain backdrop is refused, naming the field."""
    scale = working_scale(alpha.shape)
    small = shrink(photo, scale)
    small_alpha = shrink(alpha, scale)
    luminance = small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    backdrop_level = _plain_backdrop(small, luminance)
    feet = footing(small_alpha)
    if feet is None:
        raise BackdropError("no product was found to keep the shadow of; choose another shadow mode", field="shadow")
    lit = _backdrop_surface(luminance, small_alpha, feet, backdrop_level)
    free = small_alpha == 0
    shading = _smooth_within(np.clip(1.0 - luminance / lit, 0.0, 1.0), free, 1.0)  # noise out, product left out
    shading = _connected_to_product(shading, small_alpha)
    shading *= _nearness(small_alpha, feet)
    filled = _smooth_within(shading, free, max(2.0, min(shading.shape) * 0.01))
    # Under the product the photo shows no backdrop: there the shading is the backdrop's around it, so the
    # product's soft edge sits on the shadow rather than on a light rim.
    return PhotoShading(np.where(free, shading, filled).astype(np.float32), (photo.shape[1], photo.shape[0]))


def _plain_backdrop(small: np.ndarray, luminance: np.ndarray) -> float:
    """The backdrop's luminance, from the frame's outer strip; refuse a photo whose strip is no plain colour."""
    strip = max(2, round(min(luminance.shape) * BORDER))
    edges = np.concatenate([small[:strip].reshape(-1, 3), small[-strip:].reshape(-1, 3),
                            small[:, :strip].reshape(-1, 3), small[:, -strip:].reshape(-1, 3)]).astype(np.int16)
    median = np.median(edges, axis=0)
    share = float((np.abs(edges - median).max(axis=1) <= PLAIN_LEVELS).mean())
    level = float(median @ np.array([0.299, 0.587, 0.114]))
    if share < PLAIN_SHARE or level < DARKEST_BACKDROP:
        why = "is not one plain colour" if share < PLAIN_SHARE else "is too dark to show a shadow"
        raise BackdropError(
            f"'original' keeps the photo's own shadow, but this photo's backdrop {why}; "
            "choose another shadow mode: 'contact', 'soft', 'hard' or 'floating'", field="shadow")
    return level


def _backdrop_surface(luminance: np.ndarray, alpha: np.ndarray, feet, level: float) -> np.ndarray:
    """The backdrop's brightness as lit, everywhere: a smooth (quadratic) surface fitted to the backdrop
    away from the product, so a sweep's gradient or a lens's vignetting is not mistaken for shadow."""
    height, width = luminance.shape
    away = cv2.distanceTransform((alpha == 0).view(np.uint8), cv2.DIST_L2, 5) > 0.3 * feet.height
    plain = away & (np.abs(luminance - level) <= PLAIN_LEVELS)
    ys, xs = np.nonzero(plain)
    if ys.size < 50:
        return np.full(luminance.shape, max(level, 1.0), np.float32)
    pick = np.random.default_rng(0).choice(ys.size, size=min(ys.size, 20000), replace=False)
    u, v = xs[pick] / width - 0.5, ys[pick] / height - 0.5
    terms = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    coefficients, *_ = np.linalg.lstsq(terms, luminance[ys[pick], xs[pick]], rcond=None)
    grid_v, grid_u = np.mgrid[0:height, 0:width].astype(np.float32)
    grid_u, grid_v = grid_u / width - 0.5, grid_v / height - 0.5
    surface = (coefficients[0] + coefficients[1] * grid_u + coefficients[2] * grid_v + coefficients[3] * grid_u ** 2
               + coefficients[4] * grid_u * grid_v + coefficients[5] * grid_v ** 2)
    return np.maximum(surface, 1.0).astype(np.float32)


def _connected_to_product(shading: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Only the shaded region that touches the product: a dark corner or a stain elsewhere is no shadow."""
    product = cv2.dilate((alpha > 0).view(np.uint8), np.ones((5, 5), np.uint8))
    region = ((shading > NOISE).view(np.uint8) | product)
    _, labels = cv2.connectedComponents(region, connectivity=8)
    touching = np.unique(labels[product > 0])
    keep = np.isin(labels, touching[touching > 0]).astype(np.float32)
    return shading * smooth(keep, 1.5)


def _nearness(alpha: np.ndarray, feet) -> np.ndarray:
    """1 near the product, fading to 0 between 0.75 and 1.25 product heights away: a shadow ends."""
    distance = cv2.distanceTransform((alpha < 128).view(np.uint8), cv2.DIST_L2, 5)
    return np.clip((1.25 * feet.height - distance) / (0.5 * feet.height), 0.0, 1.0).astype(np.float32)


def _smooth_within(values: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """A blur of ``values`` that reads only the pixels ``where`` is true (a normalised convolution): the
    product's pixels, which show no backdrop, neither lighten nor darken the shading beside them."""
    weights = where.astype(np.float32)
    total = smooth(weights, sigma)
    return np.divide(smooth(values * weights, sigma), total, out=np.zeros_like(total), where=total > 1e-3)


def photo_to_output(photo_size: tuple[int, int], output_size: tuple[int, int]) -> np.ndarray:
    """The affine map (2x3, continuous coordinates: pixel i spans i..i+1) from photo to output when the
    product keeps its place in the frame and the photo is only scaled. Framing (a product placed on a new
    canvas) passes its own map instead."""
    return np.array([[output_size[0] / photo_size[0], 0.0, 0.0], [0.0, output_size[1] / photo_size[1], 0.0]])


def place_shading(shading: PhotoShading, transform: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """The photo's shading carried through ``transform`` (photo pixels -> output pixels, 2x3, the product's
    own) onto the output, at the output's working size (as ``grounding.ground_layer`` wants it)."""
    out_scale = working_scale((output_size[1], output_size[0]))
    shape = (max(1, round(output_size[1] * out_scale)), max(1, round(output_size[0] * out_scale)))
    # ``transform`` works on continuous coordinates (pixel i spans i..i+1): working shading pixel i's centre
    # is at (i + 0.5) / s_in in the photo; output point X is at X·s_out - 0.5 in working pixels.
    from_shading = np.array([[1 / shading.scale, 0, 0.5 / shading.scale], [0, 1 / shading.scale, 0.5 / shading.scale],
                             [0, 0, 1]])
    to_working = np.array([[out_scale, 0, -0.5], [0, out_scale, -0.5], [0, 0, 1]])
    forward = to_working @ np.vstack([transform, [0, 0, 1]]) @ from_shading
    return cv2.warpAffine(shading.shading, forward[:2], (shape[1], shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
