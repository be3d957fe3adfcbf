"""The detail pass: tiles and their blend weights, then the real tiny pipeline refining tile by tile."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scenes import perfume_bottle

from pipeline import BackdropError, GenerationCancelled, generate
from pipeline.backends.local.detail import MAX_TILES, plan_tiles, tile_strength, tile_weights, work_size


@pytest.mark.parametrize("size", [(128, 128), (300, 200), (517, 389), (100, 60), (1000, 130)])
def test_tiles_cover_the_canvas_and_their_weights_sum_to_one_everywhere(size):
    tiles = plan_tiles(size, 128)
    weights = tile_weights(tiles, size)
    total = np.zeros(size[::-1], np.float64)
    covered = np.zeros(size[::-1], int)
    for tile, weight in zip(tiles, weights):
        assert tile.width % 8 == 0 and tile.height % 8 == 0 and tile.width <= 128 and tile.height <= 128
        assert (tile.left >= 0 and tile.top >= 0 and tile.left + tile.width <= size[0]
                and tile.top + tile.height <= size[1])
        assert weight.shape == (tile.height, tile.width) and (weight > 0).all()
        total[tile.top:tile.top + tile.height, tile.left:tile.left + tile.width] += weight
        covered[tile.top:tile.top + tile.height, tile.left:tile.left + tile.width] += 1
    assert (covered >= 1).all()
    assert np.allclose(total, 1.0, atol=1e-5)


def test_the_tile_count_grows_with_the_area_up_to_the_cap():
    counts = [len(plan_tiles((side, side), 128)) for side in (128, 256, 512, 1024)]
    assert counts == [1, 9, 25, 121]  # (side - 32) / 96 tiles a row: about the area over the tile's 96x96 step
    assert len(plan_tiles(work_size((1024, 1024), 128), 128)) <= MAX_TILES
    assert work_size((512, 512), 128) == (512, 512)
    # SDXL: a 24 MP photo fits the cap at full size, 40 tiles of 1024 px
    assert work_size((6000, 4000), 1024) == (6000, 4000) and len(plan_tiles((6000, 4000), 1024)) == 40


def test_the_strength_grows_with_detail():
    assert tile_strength(0.0) < tile_strength(0.5) < tile_strength(1.0) <= 0.5


@pytest.fixture(scope="module")
def small_bottle():
    return perfume_bottle(192, 192)  # 4 tiles of the tiny set's 128 px


def detail_request(make_request, small_bottle, **overrides):
    photo, alpha = small_bottle
    return make_request(image=photo, mask=alpha, resolution=64, **overrides)


@pytest.mark.slow
def test_the_output_is_the_inputs_size_with_the_products_pixels_unchanged(tiny_models, make_request, small_bottle):
    photo, alpha = small_bottle
    reports = []
    result = generate(detail_request(make_request, small_bottle, detail=0.25), models=tiny_models,
                      on_progress=reports.append)
    image = result.images[0]
    assert image.size == photo.size
    solid = np.asarray(alpha) == 255
    assert (np.asarray(image)[solid] == np.asarray(photo.convert("RGB"))[solid]).all()
    detail = [report.message for report in reports if report.stage == "detail"]
    assert detail == [f"Detail: tile {n}/4" for n in range(1, 5)]
    assert result.info["detail_tiles"] == [4] and result.info["detail_strength"] == tile_strength(0.25)
    plain = generate(detail_request(make_request, small_bottle), models=tiny_models)
    assert not (np.asarray(plain.images[0]) == np.asarray(image)).all()  # the pass did change the background
    assert "detail_tiles" not in plain.info


def smooth_background(size: tuple[int, int]) -> Image.Image:
    x = np.linspace(0, 1, size[0], dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, size[1], dtype=np.float32)[:, None, None]
    return Image.fromarray((60 + 120 * x + 60 * y + np.zeros((1, 1, 3), np.float32)).astype(np.uint8))


def border_and_inside_steps(pixels: np.ndarray, tiles, usable: np.ndarray) -> tuple[float, float]:
    """The mean step between neighbouring pixels across the tiles' borders, and elsewhere (inside the tiles), over
    both axes, counting only pairs of pixels that are both ``usable``."""
    across, inside = [], []
    for axis in (1, 0):
        steps = np.abs(np.diff(pixels, axis=axis)).mean(axis=2)
        both = usable[:, 1:] & usable[:, :-1] if axis == 1 else usable[1:] & usable[:-1]
        length = steps.shape[axis]
        edges = {edge for tile in tiles
                 for edge in ((tile.left - 1, tile.left + tile.width - 1) if axis == 1
                              else (tile.top - 1, tile.top + tile.height - 1)) if 0 <= edge < length}
        at_border = np.zeros(length, bool)
        at_border[sorted(edges)] = True
        at_border = at_border[None, :] if axis == 1 else at_border[:, None]
        across.append(steps[both & at_border])
        inside.append(steps[both & ~at_border])
    return float(np.concatenate(across).mean()), float(np.concatenate(inside).mean())


def test_tiles_that_disagree_in_colour_blend_with_no_step_at_their_borders(small_bottle, monkeypatch):
    """Each tile comes back with a colour cast of its own (a checkerboard of +-10 levels: neighbours disagree
    by 20): across every tile border the smooth background steps no more than it does inside the tiles. A
    linear ramp would leave a faint line there, and this measure sees it (checked below)."""
    from pipeline.backends.local import detail

    photo, alpha = small_bottle
    background = smooth_background(photo.size)
    tiles = plan_tiles(photo.size, 128)

    def refined_with_casts() -> np.ndarray:
        def run_tile(tile):
            row, column = divmod(tile.index, 2)
            cast = 10 if (row + column) % 2 == 0 else -10
            return Image.fromarray(np.clip(np.asarray(tile.image, np.int16) + cast, 0, 255).astype(np.uint8))

        refined, ran = detail.refine_background(background, np.asarray(photo.convert("RGB")), np.asarray(alpha),
                                                output_size=photo.size, tile_side=128, canny=(100, 200),
                                                run_tile=run_tile)
        assert ran == len(tiles) == 4
        return np.asarray(refined, np.float32)

    everywhere = np.ones(photo.size[::-1], bool)
    across, inside = border_and_inside_steps(refined_with_casts(), tiles, everywhere)
    assert across <= inside, (across, inside)

    def linear_ramp(length, start, size, overlap):  # the weights as a straight line across each overlap
        weight, fade = np.ones(size, np.float32), np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
        if start > 0:
            weight[:overlap] = np.minimum(weight[:overlap], fade)
        if start + size < length:
            weight[size - overlap:] = np.minimum(weight[size - overlap:], fade[::-1])
        return weight

    monkeypatch.setattr(detail, "_ramp", linear_ramp)
    across_linear, inside_linear = border_and_inside_steps(refined_with_casts(), tiles, everywhere)
    # the measure does see a seam where there is one
    assert across_linear > 1.2 * inside_linear, (across_linear, inside_linear)


def test_the_real_pipeline_blends_its_tiles_with_the_weights_tested_above(tiny_models, make_request, small_bottle,
                                                                          monkeypatch):
    """The tiny pipeline refines a smooth background in 4 tiles, and its result is exactly each tile's output
    weighted by ``tile_weights`` (the raised cosine the test above shows leaves no step at a border), not some
    other mix. (Its random weights paint noise whose steps swamp any seam, so a step measure on its output
    could not tell a good blend from a hard cut; this checks the blend itself.)"""
    from pipeline.backends.local import detail
    from pipeline.backends.local.backend import _refine_details
    from pipeline.stages.reuse import Reuse

    request = detail_request(make_request, small_bottle, detail=0.25)
    prepared = Reuse().prepare(request, tiny_models.spec.native_resolution)
    outputs: dict[int, np.ndarray] = {}
    real_refine = detail.refine_background

    def keeping_each_tile(*args, run_tile, **kwargs):
        def run(tile):
            image = run_tile(tile)
            outputs[tile.index] = np.asarray(image.convert("RGB"), np.float32)
            return image
        return real_refine(*args, run_tile=run, **kwargs)

    monkeypatch.setattr(detail, "refine_background", keeping_each_tile)
    (refined,), info = _refine_details(tiny_models, request, prepared, [smooth_background(prepared.size)], [7],
                                       lambda p: None, None, Reuse())
    tiles = plan_tiles(refined.size, 128)
    assert info["detail_tiles"] == [4] and sorted(outputs) == [0, 1, 2, 3]

    def blend(weights) -> np.ndarray:
        mixed = np.zeros((refined.height, refined.width, 3), np.float32)
        for index, (tile, weight) in enumerate(zip(tiles, weights)):
            place = (slice(tile.top, tile.top + tile.height), slice(tile.left, tile.left + tile.width))
            mixed[place] += outputs[index] * weight[..., None]
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)

    assert (np.asarray(refined) == blend(tile_weights(tiles, refined.size))).all()
    flat = [np.full((tile.height, tile.width), 1.0, np.float32) for tile in tiles]
    counts = np.zeros(refined.size[::-1], np.float32)
    for tile, weight in zip(tiles, flat):
        counts[tile.top:tile.top + tile.height, tile.left:tile.left + tile.width] += weight
    flat = [weight / counts[t.top:t.top + t.height, t.left:t.left + t.width] for t, weight in zip(tiles, flat)]
    assert not (np.asarray(refined) == blend(flat)).all()  # the check tells one mix from another


@pytest.mark.slow
def test_the_time_grows_with_the_outputs_area(tiny_models, make_request):
    small, large = perfume_bottle(192, 192), perfume_bottle(384, 384)
    results = [generate(make_request(image=photo, mask=alpha, resolution=64, detail=0.1), models=tiny_models)
               for photo, alpha in (small, large)]
    assert [result.info["detail_tiles"] for result in results] == [[4], [16]]
    assert results[1].timings["detail"] > 1.5 * results[0].timings["detail"]


def test_cancel_stops_between_tiles(tiny_models, make_request, small_bottle):
    tiles_done = []
    with pytest.raises(GenerationCancelled):
        generate(detail_request(make_request, small_bottle, detail=0.1), models=tiny_models,
                 on_progress=lambda p: tiles_done.append(p.message) if p.stage == "detail" else None,
                 should_cancel=lambda: bool(tiles_done))
    assert tiles_done == ["Detail: tile 1/4"]


def test_the_hosted_backend_refuses_detail_naming_the_field(make_request):
    from pipeline.backends.hosted import generate_hosted, hosted_settings

    with pytest.raises(BackdropError, match="only on the local backend") as error:
        generate_hosted(make_request(detail=0.2), settings=hosted_settings(api_key="sk-test"))
    assert error.value.field == "detail"
