"""Grounding: the shadow and reflection that tie the product to its new scene (README, "Shadows,
reflections and light").

Every effect here is a layer on the *background*, applied before the product is laid back, so it never
touches a product pixel. A shadow is a multiplier (1 = untouched, 0 = black) made at a working size of
about a megapixel, because shadows are smooth, and carried to the output only over the box it darkens; a
reflection is a mirrored, fading copy of the product blended below its ground line at the output's size.

Everything is a pure function of numpy arrays at the output's size: the product's alpha (and pixels, for
the reflection) *as placed on the output*, so a product moved onto a new canvas (framing) gets its shadow
where it now stands. The ground line is the alpha's lowest solid row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Shadows are smooth: made at about this many pixels whatever the output's size (a contact line a few
# percent of the product's height is still several pixels deep here), then enlarged over their box only.
WORKING_PIXELS = 640 * 640
SOLID = 128  # alpha at or above this counts as product when finding its outline at working size
FORESHORTENING = 0.35  # a ground seen from a product shot's usual height: depth looks about a third as long
MIN_DEPTH_SLOPE = 0.04  # a light straight from the side still casts a shadow with some depth on the ground
_NO_CHANGE = 1e-3  # multipliers within this of 1 are left out of the darkened box


@dataclass(frozen=True)
class ShadowLook:
    """How a shadow mode looks when the request leaves a knob unset (null): its own sane defaults."""

    opacity: float  # darkness where the shadow is deepest, 0..1
    softness: float  # 0 = a crisp edge, 1 = a very diffuse one
    length: float  # cast shadow's length as a fraction of the product's height (floating: how high it floats)


MODE_DEFAULTS: dict[str, ShadowLook] = {
    "contact": ShadowLook(opacity=0.6, softness=0.3, length=0.0),
    "soft": ShadowLook(opacity=0.45, softness=0.6, length=0.5),
    "hard": ShadowLook(opacity=0.6, softness=0.1, length=0.7),
    "floating": ShadowLook(opacity=0.4, softness=0.7, length=0.15),
    "original": ShadowLook(opacity=1.0, softness=0.0, length=0.0),  # the photo's shadow as it was
}


@dataclass(frozen=True)
class Grounding:
    """A request's grounding settings, each unset knob filled with its mode's default."""

    shadow: str = "none"
    opacity: float = 0.0
    angle: float = 315.0  # where the light comes from, degrees: 0 camera, 90 right, 180 behind, 270 left
    softness: float = 0.0
    length: float = 0.0
    reflection: float = 0.0
    light_match: float = 0.0

    @classmethod
    def from_request(cls, request: object) -> Grounding:
        shadow = getattr(request, "shadow", "none")
        look = MODE_DEFAULTS.get(shadow, ShadowLook(0.0, 0.0, 0.0))

        def knob(name: str, default: float) -> float:
            value = getattr(request, name, None)
            return default if value is None else float(value)

        return cls(shadow=shadow, opacity=knob("shadow_opacity", look.opacity),
                   angle=knob("shadow_angle", 315.0), softness=knob("shadow_softness", look.softness),
                   length=knob("shadow_length", look.length), reflection=knob("reflection", 0.0),
                   light_match=knob("light_match", 0.0))

    @property
    def layers_background(self) -> bool:
        """Whether the background gets a layer at all (no: the output is exactly as without grounding)."""
        return (self.shadow != "none" and self.opacity > 0) or self.reflection > 0


# --- where the product stands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Footing:
    """The product's outline at some size: its lowest solid row (the ground line), its top, its columns'
    lowest solid rows (-1 where a column has no product) and its left/right extent."""

    ground: int
    top: int
    left: int
    right: int  # exclusive
    bottoms: np.ndarray  # (width,) int

    @property
    def height(self) -> int:
        return self.ground - self.top + 1


def footing(alpha: np.ndarray) -> Footing | None:
    """Where the product in ``alpha`` (L array) stands; None when nothing in it is solid."""
    solid = alpha >= SOLID
    rows = np.flatnonzero(solid.any(axis=1))
    if not rows.size:
        return None
    columns = solid.any(axis=0)
    cols = np.flatnonzero(columns)
    # The lowest solid row of each column: argmax on the flipped mask finds the last True.
    bottoms = np.where(columns, alpha.shape[0] - 1 - np.argmax(solid[::-1], axis=0), -1)
    return Footing(ground=int(rows[-1]), top=int(rows[0]), left=int(cols[0]), right=int(cols[-1]) + 1,
                   bottoms=bottoms.astype(np.int64))


def working_scale(shape: tuple[int, ...], pixels: int = WORKING_PIXELS) -> float:
    """The scale (≤ 1) that brings an image of ``shape`` to about ``pixels``."""
    return min(1.0, math.sqrt(pixels / (shape[0] * shape[1])))


def shrink(pixels: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return pixels
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur whose cost does not grow with ``sigma``: wide blurs run on a shrunken copy."""
    if sigma < 0.3:
        return values
    if sigma <= 6:
        return cv2.GaussianBlur(values, (0, 0), sigma)
    step = 4.0 / sigma
    small = cv2.resize(values, (max(1, round(values.shape[1] * step)), max(1, round(values.shape[0] * step))),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 4.0)
    return cv2.resize(small, values.shape[1::-1], interpolation=cv2.INTER_LINEAR)


# --- the shadow modes: each returns coverage, 0..1, where 1 is the deepest shadow --------------------------


def contact_shadow(feet: Footing, shape: tuple[int, int], softness: float) -> np.ndarray:
    """A dark, tight occlusion line under every part of the product that touches the ground, fading within
    a few percent of its height. A column whose lowest point lifts off the ground fades out with the lift."""
    coverage = np.zeros(shape, np.float32)
    depth = max(1.0, feet.height * 0.015 * (0.5 + 1.5 * softness))
    reach = max(2.0, feet.height * 0.05)
    cols = np.flatnonzero(feet.bottoms >= feet.ground - reach)
    if not cols.size:
        return coverage
    bottoms = feet.bottoms[cols].astype(np.float32)
    touching = np.clip(1.0 - (feet.ground - bottoms) / reach, 0.0, 1.0)
    first = max(0, int(bottoms.min() - depth))
    last = min(shape[0], int(feet.ground + 6 * depth) + 1)
    below = np.arange(first, last, dtype=np.float32)[:, None] - bottoms[None, :]
    # Full under the foot (behind its soft edge), falling away below it.
    band = np.where(below < -depth, 0.0, np.exp(-np.maximum(below, 0.0) / depth)) * touching
    coverage[first:last, cols] = band
    return smooth(coverage, depth * 0.6)


def cast_shadow(alpha: np.ndarray, feet: Footing, angle: float, length: float, softness: float) -> np.ndarray:
    """The product's silhouette laid on the ground, falling away from the light at ``angle`` (0 = the
    camera's side, 90 = the right, 180 = behind, 270 = the left), ``length`` times its height. The edge
    blurs and the darkness fades with the distance from the product, as a real penumbra does."""
    if length <= 0:
        return np.zeros(alpha.shape, np.float32)
    theta = math.radians(angle)
    dx = -math.sin(theta) * length
    dy = -math.cos(theta) * length * FORESHORTENING  # negative: away from the camera, up the picture
    if abs(dy) < MIN_DEPTH_SLOPE * length:
        dy = math.copysign(MIN_DEPTH_SLOPE * length, dy or 1.0)
    g = float(feet.ground)
    # Each product pixel at height z = g - y above the ground lands at (x + dx·z, g + dy·z): an affine map.
    # warpAffine wants the inverse (output pixel -> product pixel).
    inverse = np.array([[1.0, -dx / dy, dx * g / dy], [0.0, -1.0 / dy, g + g / dy]])
    weight = (alpha.astype(np.float32) / 255.0)
    rows = np.arange(alpha.shape[0], dtype=np.float32)[:, None]
    height = np.clip((g - rows) / max(feet.height, 1), 0.0, 1.0)  # 0 at the ground, 1 at the top
    layers = cv2.merge([weight, weight * height])
    laid = cv2.warpAffine(layers, inverse, alpha.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    near_sigma = max(0.7, feet.height * 0.004 * (1 + 4 * softness))
    far_sigma = near_sigma + feet.height * length * 0.12 * (0.15 + softness)
    near = smooth(laid[..., 0], near_sigma)
    far = smooth(laid[..., 0], far_sigma)
    distance = np.divide(smooth(laid[..., 1], far_sigma), far, out=np.zeros_like(far), where=far > 1e-3)
    distance = np.clip(distance, 0.0, 1.0)
    fade = 0.35 + 0.45 * softness  # soft light fades its shadow faster
    return (near * (1 - distance) + far * distance) * (1 - fade * distance)


def floating_shadow(alpha: np.ndarray, feet: Footing, lift: float, softness: float) -> np.ndarray:
    """The product lifted ``lift`` times its height: its silhouette squashed flat on the ground below it,
    detached from it and blurred by the distance."""
    squash = 0.1
    width_scale = 0.9
    centre_x = (feet.left + feet.right) / 2
    middle = (feet.top + feet.ground) / 2
    ground = feet.ground + max(lift, 0.02) * feet.height
    # Forward: x' = cx + (x - cx)·w, y' = ground + (y - middle)·squash; inverted for warpAffine.
    inverse = np.array([[1 / width_scale, 0.0, centre_x - centre_x / width_scale],
                        [0.0, 1 / squash, middle - ground / squash]])
    laid = cv2.warpAffine(alpha.astype(np.float32) / 255.0, inverse, alpha.shape[1::-1],
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    sigma = feet.height * (0.01 + 0.05 * softness) * (0.5 + 2 * max(lift, 0.02))
    shadow = smooth(laid, sigma)
    deepest = float(shadow.max())  # a thin or hollow product (a ring) still casts as deep as its opacity says
    return shadow / deepest if deepest > 1e-3 else shadow


def shadow_coverage(alpha: np.ndarray, grounding: Grounding) -> np.ndarray | None:
    """How deep the shadow of ``grounding.shadow`` is at each pixel of ``alpha``'s size (0..1), or None
    for none (and for ``original``, which comes from the photo, not from the outline)."""
    feet = footing(alpha)
    if feet is None or grounding.shadow in ("none", "original"):
        return None
    shape = alpha.shape[:2]
    if grounding.shadow == "floating":
        return floating_shadow(alpha, feet, grounding.length, grounding.softness)
    contact = contact_shadow(feet, shape, min(grounding.softness, 0.5))
    if grounding.shadow == "contact":
        return contact
    cast = cast_shadow(alpha, feet, grounding.angle, grounding.length, grounding.softness)
    return 1 - (1 - 0.85 * contact) * (1 - cast)  # both darken: their union, never past 1


# --- the layer: made at working size, applied at the output's ---------------------------------------------


@dataclass(frozen=True)
class GroundLayer:
    """The background's layer for one output: a shadow multiplier at working size (``None``: no shadow)
    and the reflection's strength."""

    shade: np.ndarray | None  # float32, working size: 1 = untouched
    scale: float  # working size / output size
    reflection: float
    alpha: np.ndarray  # the product's alpha at working size (for the layer's picture)


def ground_layer(alpha: np.ndarray, grounding: Grounding, shading: np.ndarray | None = None) -> GroundLayer:
    """The layer for a product with ``alpha`` (L, output size, as placed on the output). ``shading`` is
    the photo's own shadow (``original``) already carried onto the output at working size."""
    scale = working_scale(alpha.shape)
    small_alpha = shrink(alpha, scale)
    coverage = shading if grounding.shadow == "original" else shadow_coverage(small_alpha, grounding)
    shade = None
    if coverage is not None and grounding.opacity > 0:
        shade = (1.0 - grounding.opacity * np.clip(coverage, 0.0, 1.0)).astype(np.float32)
    return GroundLayer(shade=shade, scale=scale, reflection=grounding.reflection, alpha=small_alpha)


def apply_layer(background: np.ndarray, product: np.ndarray, alpha: np.ndarray, layer: GroundLayer) -> None:
    """Darken and reflect into ``background`` (RGB uint8, output size, changed in place): only the box the
    shadow darkens and the band below the product are touched."""
    if layer.shade is not None:
        _multiply(background, layer.shade, layer.scale)
    if layer.reflection > 0:
        reflect(background, product, alpha, layer.reflection)


def _multiply(background: np.ndarray, shade: np.ndarray, scale: float) -> None:
    darkened = shade < 1.0 - _NO_CHANGE
    rows, cols = np.flatnonzero(darkened.any(axis=1)), np.flatnonzero(darkened.any(axis=0))
    if not rows.size:
        return
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    height, width = background.shape[:2]
    # The output box that covers the working box, one working pixel wider for interpolation.
    y0, x0 = max(0, math.floor((top - 1) / scale)), max(0, math.floor((left - 1) / scale))
    y1, x1 = min(height, math.ceil((bottom + 1) / scale)), min(width, math.ceil((right + 1) / scale))
    # Output pixel (x, y) sits at working (x + 0.5)·s - 0.5: that map, offset to the box, inverted by cv2.
    to_working = np.array([[scale, 0.0, (x0 + 0.5) * scale - 0.5], [0.0, scale, (y0 + 0.5) * scale - 0.5]])
    box_shade = cv2.warpAffine(shade, to_working, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
    box = background[y0:y1, x0:x1]
    # OpenCV multiplies 8-bit pixels by float factors and rounds back to 8 bits in one pass: ~10x numpy's
    # float round trip on a 24 MP photo's shadow box.
    box[...] = cv2.multiply(box, cv2.merge([box_shade] * 3), dtype=cv2.CV_8U)


def reflect(background: np.ndarray, product: np.ndarray, alpha: np.ndarray, strength: float,
            depth: float = 0.35) -> None:
    """A mirrored copy of the product below its ground line, ``strength`` strong at the line and fading
    to nothing ``depth`` times the product's height below it (a glossy surface: glass, marble, lacquer)."""
    feet = footing(alpha)
    if feet is None:
        return
    reach = min(int(feet.height * depth), background.shape[0] - 1 - feet.ground, feet.ground + 1)
    if reach < 1:
        return
    rows = slice(feet.ground + 1, feet.ground + 1 + reach)
    sources = slice(feet.ground, feet.ground - reach, -1) if feet.ground - reach >= 0 else \
        slice(feet.ground, None, -1)
    cols = slice(feet.left, feet.right)
    mirrored = np.ascontiguousarray(product[sources, cols])
    fade = (1.0 - np.arange(1, reach + 1, dtype=np.float32) / (reach + 1)) ** 2
    weight = alpha[sources, cols].astype(np.float32) * (strength / 255.0) * fade[:, None]
    box = background[rows, cols]
    box[...] = cv2.blendLinear(mirrored, np.ascontiguousarray(box), weight, 1.0 - weight)


def layer_picture(product: np.ndarray, layer: GroundLayer) -> np.ndarray:
    """The layer alone, over white, at working size: what the studio shows among the intermediates."""
    canvas = np.full(layer.alpha.shape + (3,), 255, np.uint8)
    if layer.shade is not None:
        canvas[...] = np.clip(255.0 * layer.shade[..., None] + 0.5, 0, 255).astype(np.uint8)
    if layer.reflection > 0:  # a preview: a quick resize of the product is enough
        small = cv2.resize(product, layer.alpha.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        reflect(canvas, small, layer.alpha, layer.reflection)
    return canvas
