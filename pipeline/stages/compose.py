"""Sizes in and out of the generator, and laying the untouched product back over the new background."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def resize(image: Image.Image | np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Area averaging when shrinking (no aliasing), bicubic when enlarging. Pass pixels you already hold
    as an array: turning a 24 MP image into one costs a sixth of a second each time."""
    pixels = image if isinstance(image, np.ndarray) else np.asarray(image)
    mode = "L" if pixels.ndim == 2 else "RGB" if pixels.shape[2] == 3 else "RGBA"
    if pixels.shape[1::-1] == size:
        return image if isinstance(image, Image.Image) else Image.fromarray(pixels, mode=mode)
    shrinking = size[0] * size[1] < pixels.shape[0] * pixels.shape[1]
    # Bicubic, not Lanczos, to enlarge: the same look on a ~1 MP generated background, 9x faster to 24 MP.
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return Image.fromarray(cv2.resize(pixels, size, interpolation=interpolation), mode=mode)


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


@dataclass(frozen=True)
class SoftEdge:
    """The product's soft edge: where it is (``rows``, ``cols``), how solid each pixel is (``alpha``) and
    the product's own colour there (``colour``). It depends only on the photo and its alpha, so a request
    finds it once and lays every sample's product over its background with it."""

    rows: np.ndarray
    cols: np.ndarray
    alpha: np.ndarray  # (n, 1) uint16, 1..254
    colour: np.ndarray  # (n, 3) uint8


def soft_edge(rgb: np.ndarray, alpha: np.ndarray) -> SoftEdge:
    """The soft edge of ``alpha`` (L array) over the product ``rgb`` (RGB array of the same size)."""
    points = cv2.findNonZero(cv2.inRange(alpha, 1, 254))  # row by row, as np.nonzero, 8x faster
    if points is None or not len(points):
        empty = np.zeros(0, np.int32)
        return SoftEdge(empty, empty, np.zeros((0, 1), np.uint16), np.zeros((0, 3), np.uint8))
    points = points.reshape(-1, 2)  # (x, y) pairs
    rows, cols = points[:, 1], points[:, 0]
    return SoftEdge(rows, cols, alpha[rows, cols].astype(np.uint16)[:, None],
                    _decontaminated_edge(rgb, alpha, rows, cols))


def composite_product(product: Image.Image | np.ndarray, alpha: Image.Image | np.ndarray,
                      background: Image.Image, edge: SoftEdge | None = None) -> Image.Image:
    """The product (its own pixels, at its own size) laid over ``background`` through the soft ``alpha``.

    Where alpha is 255 the output is the input, bit for bit. On the soft edge the product's colour is
    first separated from the old backdrop it was photographed on, so no light (or dark) fringe of the old
    background survives around the product. Only the soft edge is blended pixel by pixel: a 24 MP photo's
    solid product and clear background are copied whole, which keeps the final step well under a second.
    ``product`` (RGB) and ``alpha`` (L) may be arrays, which saves converting a large photo per sample, and
    ``edge`` may be their ``soft_edge``, found once for all of a request's samples.
    """
    rgb = product if isinstance(product, np.ndarray) else np.asarray(product.convert("RGB"))
    weights = alpha if isinstance(alpha, np.ndarray) else np.asarray(alpha.convert("L"))
    if background.mode != "RGB":
        background = background.convert("RGB")
    output = np.array(cover(background, rgb.shape[1::-1]))  # a writable copy
    cv2.copyTo(rgb, (weights == 255).view(np.uint8), output)
    edge = edge if edge is not None else soft_edge(rgb, weights)
    if edge.rows.size:
        behind = output[edge.rows, edge.cols].astype(np.uint16)
        blended = (edge.colour.astype(np.uint16) * edge.alpha + behind * (255 - edge.alpha) + 127) // 255
        output[edge.rows, edge.cols] = blended.astype(np.uint8)
    return Image.fromarray(output, mode="RGB")


# Reaches (in pixels of a ~1.5 MP working copy) over which the soft edge looks for solid product colour:
# widest first, so the nearest solid colour found at the finest reach wins (wide feathering too).
_FILL_SIGMAS = (32.0, 8.0, 2.0)
_FILL_WORKING_SIDE = 1536  # colour fill is smooth: bigger photos are filled from a copy this size
_FILL_GRID_SIGMA = 2.0  # each reach is blurred on a grid coarse enough that its blur is this many cells


def _decontaminated_edge(rgb: np.ndarray, alpha: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The colour of the product at each soft-edge pixel (``rows``, ``cols``), taken from the solid product
    nearby rather than from the photo.

    A soft-edge pixel mixes product and old backdrop, and a mask model's soft edge often reaches a pixel
    or two into the backdrop. Taking those pixels' colour from the solid product next to them means the
    old backdrop cannot show as a light or dark fringe. Each reach is a normalised Gaussian mean of the
    solid pixels, computed on a grid coarse enough for a 2-cell blur and read back at the edge pixels
    only, so its cost does not grow with the reach or with the photo's megapixels.
    """
    top, bottom, left, right = _bounding_box(rows, cols, margin=96, shape=alpha.shape)
    # Colour premultiplied by solidity (exact in 8 bits: solidity is 0 or 1) and solidity itself, shrunk
    # alike: their ratio, after any resize or blur, is a weighted mean of solid colour.
    solid = (alpha[top:bottom, left:right] >= SOLID_ALPHA).view(np.uint8)
    crop = rgb[top:bottom, left:right]
    premultiplied = cv2.bitwise_and(crop, crop, mask=solid)
    working = min(1.0, _FILL_WORKING_SIDE / max(solid.shape))
    if working < 1.0:  # shrink in 8 bits before anything turns into floats
        size = (max(1, round(solid.shape[1] * working)), max(1, round(solid.shape[0] * working)))
        premultiplied = cv2.resize(premultiplied, size, interpolation=cv2.INTER_AREA)
        solid = cv2.resize(solid * np.uint8(255), size, interpolation=cv2.INTER_AREA)
    else:
        solid = solid * np.uint8(255)
    layers = cv2.merge([premultiplied, solid]).astype(np.float32)
    layers[..., 3] *= 1.0 / 255.0
    # Edge pixel centres in working-grid coordinates.
    ys = ((rows - top + 0.5) * working - 0.5).astype(np.float32)
    xs = ((cols - left + 0.5) * working - 0.5).astype(np.float32)
    # Finest reach first, each grid shrunk from the last one (a fraction of the pixels to average), then
    # applied widest first so that the finest reach that found solid colour has the last word. All grids
    # are shrunk before any is blurred, so each can be blurred in place: a new full-size float grid
    # costs ~2 ms of fresh pages from the kernel at 1 MP (docs/PERFORMANCE.md).
    grids, grid, scale = [], layers, 1.0
    for sigma in sorted(_FILL_SIGMAS):
        step = min(1.0, _FILL_GRID_SIGMA / sigma) / scale
        grid, scale = _shrunk(grid, step), scale * step
        grids.append((sigma, grid, scale))
    reaches = []
    for sigma, grid, scale in grids:
        cv2.GaussianBlur(grid, (0, 0), sigma * scale, dst=grid)
        reaches.append(_sample(grid, (xs + 0.5) * scale - 0.5, (ys + 0.5) * scale - 0.5))
    estimate = rgb[rows, cols].astype(np.float32)
    for points in reversed(reaches):
        reached = points[:, 3:]
        estimate = np.divide(points[:, :3], reached, out=estimate, where=reached > 1e-3)
    return np.clip(estimate + 0.5, 0, 255).astype(np.uint8)


def _shrunk(layers: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return layers
    size = (max(1, round(layers.shape[1] * scale)), max(1, round(layers.shape[0] * scale)))
    return cv2.resize(layers, size, interpolation=cv2.INTER_AREA)


def _sample(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, row: int = 1024) -> np.ndarray:
    """Bilinear samples of ``image`` at (``xs``, ``ys``), one row per point. OpenCV's remap wants maps
    under 32767 on each side, so the points travel as a block ``row`` wide."""
    count = xs.size
    padded = -(-count // row) * row
    map_x = np.zeros(padded, np.float32)
    map_y = np.zeros(padded, np.float32)
    map_x[:count], map_y[:count] = xs, ys
    block = cv2.remap(image, map_x.reshape(-1, row), map_y.reshape(-1, row), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
    return block.reshape(padded, image.shape[2])[:count]


def _bounding_box(rows: np.ndarray, cols: np.ndarray, *, margin: int,
                  shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    return (
        max(int(rows.min()) - margin, 0),
        min(int(rows.max()) + margin + 1, shape[0]),
        max(int(cols.min()) - margin, 0),
        min(int(cols.max()) + margin + 1, shape[1]),
    )
