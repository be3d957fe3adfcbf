"""Framing: the product placed on the canvas a marketplace or a feed asks for (README, "Framing").

The product's alpha bounding box is scaled to fit the canvas less its padding and aligned by ``placement``.
A side where the photo's own frame cuts the product (a sofa cropped at the edge) is snapped to the canvas
edge: padding there would show the cut as a straight line floating in the new scene. The product and its
alpha are resampled once, from the photo straight to their placed size, so the product laid back keeps as
much of the photo's detail as the canvas allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from pipeline.contract.canvases import (
    canvas_size,
    canvas_sizes,
    normalise_canvas,
    parse_size,
)
from pipeline.contract.errors import BackdropError
from pipeline.contract.images import to_rgb
from pipeline.stages.masking import refine_alpha, subject_alpha

__all__ = ["Placement", "canvas_size", "canvas_sizes", "enlargement_warning", "framing_preview", "normalise_canvas",
           "parse_size", "place", "place_product", "product_bounds", "require_product"]

# A product whose alpha box comes this close to the photo's edge (a fraction of that side, at least a pixel)
# is cut by the frame: mask models often leave a pixel or two of backdrop at a cropped edge.
CUT_TOLERANCE = 0.005
# Enlarging by less than this is invisible; past it the studio says to use a larger photo.
WARN_ENLARGEMENT = 1.05
_HORIZONTAL = {"left": 0.0, "right": 1.0}
_VERTICAL = {"top": 0.0, "bottom": 1.0}


@dataclass(frozen=True)
class Placement:
    """Where the product lands: its box in the photo (``source``: left, top, right, bottom) drawn onto
    ``box`` (left, top, width, height; may reach past the canvas where a product cut on two opposite sides
    fills it) on a ``canvas`` of (width, height), ``scale`` times its size in the photo."""

    canvas: tuple[int, int]
    source: tuple[int, int, int, int]
    box: tuple[int, int, int, int]
    padded_box: tuple[int, int, int, int]  # the canvas less its padding (left, top, width, height), for previews
    scale: float
    cut: tuple[bool, bool, bool, bool]  # the photo's frame cuts the product: left, top, right, bottom

    @property
    def visible_box(self) -> tuple[int, int, int, int]:
        """``box`` clipped to the canvas: what the output shows of the product (left, top, width, height)."""
        left, top = max(self.box[0], 0), max(self.box[1], 0)
        right = min(self.box[0] + self.box[2], self.canvas[0])
        bottom = min(self.box[1] + self.box[3], self.canvas[1])
        return left, top, right - left, bottom - top

    def photo_to_output(self, output_size: tuple[int, int]) -> np.ndarray:
        """The affine map (2x3, continuous coordinates) this placement applies: the product's box in the photo
        onto its box on the canvas, then the canvas onto ``output_size`` (the canvas, or the generation size)."""
        left, top, right, bottom = self.source
        box_left, box_top, box_width, box_height = self.box
        kx, ky = box_width / (right - left), box_height / (bottom - top)
        fx, fy = output_size[0] / self.canvas[0], output_size[1] / self.canvas[1]
        return np.array([[kx * fx, 0.0, (box_left - left * kx) * fx], [0.0, ky * fy, (box_top - top * ky) * fy]])

    def scaled_to(self, size: tuple[int, int]) -> Placement:
        """The same placement on a canvas of ``size`` (the generation size, in the canvas's aspect ratio)."""
        fx, fy = size[0] / self.canvas[0], size[1] / self.canvas[1]
        box = _whole_pixels(self.box[0] * fx, self.box[1] * fy, self.box[2] * fx, self.box[3] * fy)
        padded = _whole_pixels(self.padded_box[0] * fx, self.padded_box[1] * fy, self.padded_box[2] * fx,
                               self.padded_box[3] * fy)
        return Placement(size, self.source, box, padded, self.scale * fx, self.cut)


def require_product(alpha: Image.Image, source: str) -> None:
    """Refuse a mask with no product in it, naming where it came from (the user's ``mask``, else ``image``):
    there is nothing to keep, and nothing to place on a canvas."""
    if alpha.getextrema()[1] < 128:
        field = "mask" if source == "user mask" else "image"
        what = "the mask" if field == "mask" else f"the product's alpha ({source})"
        raise BackdropError(f"{what} is empty: no pixel of it marks the product; give a mask with the product in "
                            "white (or choose another mask_model)", field=field)


def product_bounds(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """The product's box in ``alpha`` (left, top, right, bottom; right and bottom exclusive): every pixel
    the product covers at all (``require_product`` has made sure there is one)."""
    points = cv2.findNonZero((alpha > 0).view(np.uint8))
    if points is None:
        raise BackdropError("is empty: no pixel of it marks the product", field="mask")
    left, top, width, height = cv2.boundingRect(points)
    return left, top, left + width, top + height


def place(photo_size: tuple[int, int], source: tuple[int, int, int, int], canvas: tuple[int, int],
          padding: float = 0.0, placement: str = "center") -> Placement:
    """Where a product whose box in a photo of ``photo_size`` is ``source`` lands on ``canvas``.

    It is scaled to fit the canvas less ``padding`` on each side (a fraction of that side) and aligned by
    ``placement``. A side cut by the photo's frame gets no padding and is aligned to its canvas edge; a
    product cut on two opposite sides is scaled to span the canvas that way (it may then be cropped the
    other way, as it was in the photo)."""
    left, top, right, bottom = source
    cut = (_cut(left, photo_size[0]), _cut(top, photo_size[1]),
           _cut(photo_size[0] - right, photo_size[0]), _cut(photo_size[1] - bottom, photo_size[1]))
    margin_x, margin_y = padding * canvas[0], padding * canvas[1]
    room_left, room_top = (0.0 if cut[0] else margin_x), (0.0 if cut[1] else margin_y)
    room_right = canvas[0] - (0.0 if cut[2] else margin_x)
    room_bottom = canvas[1] - (0.0 if cut[3] else margin_y)
    width, height = right - left, bottom - top
    fit_x, fit_y = (room_right - room_left) / width, (room_bottom - room_top) / height
    spans_x, spans_y = cut[0] and cut[2], cut[1] and cut[3]
    scale = (max(fit_x, fit_y) if spans_x and spans_y else fit_x if spans_x else fit_y if spans_y
             else min(fit_x, fit_y))
    horizontal, vertical = _alignment(placement)
    # Edges are worked out in fractions of a pixel and rounded last, so each lands within half a pixel.
    x = _align(room_left, room_right, width * scale, horizontal, cut[0], cut[2])
    y = _align(room_top, room_bottom, height * scale, vertical, cut[1], cut[3])
    box = _whole_pixels(x, y, width * scale, height * scale)
    padded = _whole_pixels(margin_x, margin_y, canvas[0] - 2 * margin_x, canvas[1] - 2 * margin_y)
    return Placement(canvas, source, box, padded, scale, cut)


def _whole_pixels(x: float, y: float, width: float, height: float) -> tuple[int, int, int, int]:
    left, top = round(x), round(y)
    return left, top, max(1, round(x + width) - left), max(1, round(y + height) - top)


def _cut(gap: int, side: int) -> bool:
    return gap <= max(1, round(CUT_TOLERANCE * side))


def _alignment(placement: str) -> tuple[float, float]:
    """(horizontal, vertical) as fractions of the free room: 0 left/top, 0.5 centre, 1 right/bottom."""
    words = placement.split("-")
    horizontal = next((_HORIZONTAL[word] for word in words if word in _HORIZONTAL), 0.5)
    vertical = next((_VERTICAL[word] for word in words if word in _VERTICAL), 0.5)
    return horizontal, vertical


def _align(start: float, end: float, length: float, fraction: float, cut_start: bool, cut_end: bool) -> float:
    if cut_start and not cut_end:
        return start  # the cut side on its canvas edge
    if cut_end and not cut_start:
        return end - length
    if cut_start and cut_end:
        fraction = 0.5
    return start + (end - start - length) * fraction


def place_product(product: np.ndarray, alpha: np.ndarray, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
    """The product (RGB array, white where the canvas is empty) and its alpha (L array) on the canvas.

    Only the product's box is resampled, once, straight from the photo: area averaging when shrinking (no
    aliasing), bicubic when enlarging. The part of a box that reaches past the canvas is cut off."""
    left, top, right, bottom = placement.source
    x, y, width, height = placement.box
    shrinking = width * height < (right - left) * (bottom - top)
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    placed_rgb = cv2.resize(product[top:bottom, left:right], (width, height), interpolation=interpolation)
    placed_alpha = cv2.resize(alpha[top:bottom, left:right], (width, height), interpolation=interpolation)
    canvas_w, canvas_h = placement.canvas
    rgb = np.full((canvas_h, canvas_w, 3), 255, np.uint8)
    weights = np.zeros((canvas_h, canvas_w), np.uint8)
    visible_x, visible_y, visible_w, visible_h = placement.visible_box
    if visible_w > 0 and visible_h > 0:
        inside = np.s_[visible_y - y:visible_y - y + visible_h, visible_x - x:visible_x - x + visible_w]
        target = np.s_[visible_y:visible_y + visible_h, visible_x:visible_x + visible_w]
        rgb[target], weights[target] = placed_rgb[inside], placed_alpha[inside]
    return rgb, weights


def enlargement_warning(info: dict) -> str | None:
    """What the studio says when framing enlarged the product past what a photo's detail supports."""
    enlarged = info.get("enlarged")
    if not enlarged or enlarged < WARN_ENLARGEMENT:
        return None
    return f"the product is enlarged {enlarged:.1f}x: use a larger photo for a sharper product"


def framing_info(placement: Placement, output_size: tuple[int, int]) -> dict:
    """What a result records about its framing: the product's box on the output (left, top, width, height in
    output pixels, which differ from the canvas's with output_size ``generation``) and its scale."""
    shown = placement.scaled_to(output_size) if output_size != placement.canvas else placement
    info = {"canvas_size": list(placement.canvas), "product_box": list(shown.visible_box),
            "scale": round(placement.scale, 4)}
    if placement.scale > 1:
        info["enlarged"] = round(placement.scale, 2)
    return info


_CHECKER = 16  # checkerboard square, in preview pixels
BOX_COLOUR = (230, 40, 120)  # the padded box's outline: a magenta no product photo's backdrop is
_PREVIEW_SIDE = 512


def framing_preview(image: Image.Image, mask: Image.Image | None, mask_model: str, canvas: str,
                    padding: float = 0.0, placement: str = "center", *, side: int = _PREVIEW_SIDE) -> Image.Image:
    """The product on a checkerboard canvas (at most ``side`` pixels), the padded box drawn in: what the
    studio's Framing panel shows before any generation. With canvas ``input``, the photo's own framing."""
    alpha, source = subject_alpha(image, mask_model=mask_model, user_mask=mask)
    require_product(alpha, source)
    alpha_pixels = np.asarray(refine_alpha(alpha))  # specks of the old backdrop snapped away, as in a request
    bounds = product_bounds(alpha_pixels)
    size = canvas_size(canvas)
    if size is None:  # the photo's own framing: the whole photo, and no padding
        whole = (0, 0, *image.size)
        where = Placement(image.size, whole, whole, whole, 1.0, (False,) * 4)
    else:
        where = place(image.size, bounds, size, padding, placement)
    where = where.scaled_to(_shrunk_to(where.canvas, side))
    rgb, weights = place_product(np.asarray(to_rgb(image)), alpha_pixels, where)
    board = _checkerboard(where.canvas)
    left, top, width, height = where.padded_box
    ImageDraw.Draw(board).rectangle((left, top, left + width - 1, top + height - 1), outline=BOX_COLOUR, width=2)
    board.paste(Image.fromarray(rgb), (0, 0), Image.fromarray(weights))  # the product over the box's line
    return board


def _shrunk_to(size: tuple[int, int], side: int) -> tuple[int, int]:
    factor = min(1.0, side / max(size))
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def _checkerboard(size: tuple[int, int]) -> Image.Image:
    rows, cols = np.indices((size[1], size[0])) // _CHECKER
    light = ((rows + cols) % 2 == 0)[..., None]
    return Image.fromarray(np.where(light, np.uint8(236), np.uint8(204)).repeat(3, axis=2).astype(np.uint8))
