"""The detail pass (request field ``detail``): the generated background, enlarged to the output's size, refined
in overlapping tiles of the model's native size so a 24 MP photo gets a 24 MP scene, not a 1 MP one stretched.

Each tile goes through the same loaded pipeline as the first generation, as image-to-image at a strength that
grows with ``detail`` (``tile_strength``), with the same prompt and reference embeddings, its own crop of the
product's canny edges and its own inpaint mask, so the product stays masked out exactly as in the first pass
(and is laid back over the result afterwards, pixel for pixel, like every output).

Blending: tiles overlap by a quarter of their side, and every output pixel is the weighted mean of the tiles
covering it, with weights that rise across each overlap as a raised cosine and are normalised to sum to one
everywhere (``tile_weights``). The cosine, not a straight line, because its slope is zero where a tile ends: two
tiles that disagree (a slightly warmer tile beside a cooler one) cross-fade in the middle of their overlap and
the tile's own edge adds next to no step, where a linear ramp steps by the disagreement over the overlap's
width right at the edge, a faint line along every tile border. MultiDiffusion (Bar-Tal et al. 2023) instead
averages the latents of overlapping tiles at every denoising step; it was not chosen because it needs every tile's
latents in memory at once and a denoising loop of its own, replacing the diffusers pipeline call (and the
ControlNet, IP-Adapter, inpainting and offload handling inside it) that Backdrop runs for the first pass; and it
cannot stop between tiles.
Averaging in pixels suffices here because the tiles do not invent a scene, they refine one: each starts from
the same enlarged background, at a strength of at most ``MAX_TILE_STRENGTH``, so neighbours agree on layout
and colour and differ only in fine texture, which the ramps cross-fade over a quarter tile. (The seam tests,
tests/test_detail.py: tiles with colour casts of their own step no more across a border than inside a tile on a
smooth background, where linear ramps do; and the real pipeline's result is exactly its tiles mixed by these
weights.)

Work is capped at ``MAX_TILES`` tiles per image: a 24 MP (6000x4000) output at SDXL's 1024 px tiles is 8x5 = 40.
An output whose grid would need more is refined at the largest size whose grid fits (then enlarged to the
output), so time grows with the output's area up to the cap and stays flat past it. Tiles wholly inside the
product (nothing to regenerate) are skipped. Progress is reported per tile; Cancel stops between tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.contract.errors import GenerationCancelled
from pipeline.contract.result import CancelCheck, Progress, ProgressCallback
from pipeline.stages.compose import resize
from pipeline.stages.edges import subject_canny
from pipeline.stages.masking import inpaint_mask

MAX_TILES = 48
OVERLAP_SHARE = 0.25  # of the tile's side
MIN_TILE_STRENGTH = 0.15
MAX_TILE_STRENGTH = 0.5
SIZE_MULTIPLE = 8  # the VAE's: a tile's sides are multiples of it


@dataclass(frozen=True)
class Tile:
    left: int
    top: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.left + self.width, self.top + self.height)


@dataclass(frozen=True)
class TileInputs:
    """What one tile's pipeline call takes, all at the tile's size."""

    image: Image.Image  # RGB: the enlarged background's crop
    mask: Image.Image  # L: 255 = regenerate (everything but the solid product)
    canny: Image.Image  # RGB: the product's edges in this crop
    index: int


TileRunner = Callable[[TileInputs], Image.Image]


def tile_strength(detail: float) -> float:
    """The image-to-image strength of each tile: ``MIN_TILE_STRENGTH`` at the least detail, rising to
    ``MAX_TILE_STRENGTH`` at 1. Past about 0.5 tiles start inventing content of their own and seams show."""
    return round(MIN_TILE_STRENGTH + (MAX_TILE_STRENGTH - MIN_TILE_STRENGTH) * detail, 3)


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, size) of tiles covering ``length``, evenly spread, each overlapping the next by >= ``overlap``."""
    size = min(tile, max(SIZE_MULTIPLE, length // SIZE_MULTIPLE * SIZE_MULTIPLE))
    if size >= length:
        return [(0, size)]
    count = math.ceil((length - overlap) / (size - overlap))
    count = max(count, 2)
    return [(round(i * (length - size) / (count - 1)), size) for i in range(count)]


def plan_tiles(size: tuple[int, int], tile_side: int) -> list[Tile]:
    """The tiles covering an image of ``size`` (width, height), row by row."""
    overlap = int(tile_side * OVERLAP_SHARE)
    return [Tile(left, top, width, height)
            for top, height in _spans(size[1], tile_side, overlap)
            for left, width in _spans(size[0], tile_side, overlap)]


def work_size(output_size: tuple[int, int], tile_side: int) -> tuple[int, int]:
    """The size the detail pass refines at: the output's, or the largest of its shape whose grid fits ``MAX_TILES``."""
    width, height = output_size
    scale = 1.0
    while len(plan_tiles((round(width * scale), round(height * scale)), tile_side)) > MAX_TILES:
        scale *= 0.95
    return (round(width * scale), round(height * scale))


def _ramp(length: int, start: int, size: int, overlap: int) -> np.ndarray:
    """A tile's weight along one axis: rising from near 0 to 1 over ``overlap`` px, as a raised cosine, from each
    side that has a neighbour; never 0 (a canvas edge has no neighbour, so it stays at 1)."""
    weight = np.ones(size, np.float32)
    fade = (0.5 - 0.5 * np.cos(np.pi * np.arange(1, overlap + 1) / (overlap + 1))).astype(np.float32)
    if start > 0:
        weight[:overlap] = np.minimum(weight[:overlap], fade)
    if start + size < length:
        weight[size - overlap:] = np.minimum(weight[size - overlap:], fade[::-1])
    return weight


def tile_weights(tiles: list[Tile], size: tuple[int, int]) -> list[np.ndarray]:
    """Each tile's blend weights (height x width, float32), normalised so that at every pixel of the canvas the
    weights of the tiles covering it sum to one."""
    raw = []
    for tile in tiles:
        overlap = max(1, min(tile.width, tile.height) // 4)
        raw.append(np.outer(_ramp(size[1], tile.top, tile.height, overlap),
                            _ramp(size[0], tile.left, tile.width, overlap)))
    total = np.zeros((size[1], size[0]), np.float32)
    for tile, weight in zip(tiles, raw):
        total[tile.top:tile.top + tile.height, tile.left:tile.left + tile.width] += weight
    return [weight / total[t.top:t.top + t.height, t.left:t.left + t.width] for t, weight in zip(tiles, raw)]


def refine_background(background: Image.Image, product: np.ndarray, alpha: np.ndarray, *, output_size: tuple[int, int],
                      tile_side: int, canny: tuple[int, int], run_tile: TileRunner,
                      report: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                      label: str = "") -> tuple[Image.Image, int]:
    """``background`` enlarged to ``output_size`` and refined tile by tile through ``run_tile``; returns it and
    the number of tiles run. ``product`` and ``alpha`` are the photo's pixels and the product's alpha (any size:
    they are fitted to the work size) for each tile's canny crop and inpaint mask."""
    size = work_size(output_size, tile_side)
    enlarged = resize(background, size)
    product_at, alpha_at = np.asarray(resize(product, size)), np.asarray(resize(alpha, size))
    tiles = plan_tiles(size, tile_side)
    weights = tile_weights(tiles, size)
    blended = np.zeros((size[1], size[0], 3), np.float32)
    halo = max(1, round(tile_side / 256))  # as the first pass's inpaint mask (prepare.py)
    ran = 0
    for index, (tile, weight) in enumerate(zip(tiles, weights)):
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("generation was cancelled")
        rows, columns = slice(tile.top, tile.top + tile.height), slice(tile.left, tile.left + tile.width)
        crop = enlarged.crop(tile.box)
        mask = inpaint_mask(Image.fromarray(alpha_at[rows, columns]), halo=halo)
        if mask.getextrema()[1] == 0:  # all product: nothing to regenerate, the product is laid back anyway
            refined = crop
        else:
            edges = subject_canny(Image.fromarray(product_at[rows, columns]), Image.fromarray(alpha_at[rows, columns]),
                                  low=canny[0], high=canny[1])
            refined = run_tile(TileInputs(image=crop, mask=mask, canny=edges, index=index))
            ran += 1
        blended[rows, columns] += np.asarray(refined.convert("RGB").resize(crop.size), np.float32) * weight[..., None]
        if report is not None:
            report(Progress("detail", (index + 1) / len(tiles), f"Detail{label}: tile {index + 1}/{len(tiles)}"))
    result = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    return resize(result, output_size), ran
