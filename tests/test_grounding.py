"""Grounding (README, "Shadows, reflections and light"): shadows and reflections are layers on the background
that never touch a product pixel; light match changes the product only when asked, and says by how much."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scenes import floating_product, perfume_bottle, product_with_shadow, reference_scene, standing_product

from pipeline import BackdropError, BgReplaceRequest
from pipeline.stages.grounding import Grounding, footing, ground_layer, shadow_coverage
from pipeline.stages.photo_shadow import photo_shading, photo_to_output, place_shading
from pipeline.stages.prepare import compose_grounded, compose_output, prepare_inputs

MODES = ("contact", "soft", "hard", "floating")
GREY = Image.new("RGB", (64, 64), (180, 180, 180))


def grounded(mode: str, **knobs) -> Grounding:
    return Grounding.from_request(type("Settings", (), {"shadow": mode, **knobs})())


def request_for(photo, alpha, **settings) -> BgReplaceRequest:
    return BgReplaceRequest(image=photo, ref_image=GREY, prompt="on a table", mask=alpha, **settings)


def compose(photo, alpha, background=GREY, **settings):
    request = request_for(photo, alpha, **settings)
    return compose_grounded(request, prepare_inputs(request, native_resolution=256), background)


@pytest.fixture(scope="module")
def standing():
    return standing_product(300, 400)


@pytest.fixture(scope="module")
def shot_with_shadow():
    return product_with_shadow(300, 400, darkness=0.5)


@pytest.mark.parametrize("mode", MODES)
def test_each_shadow_darkens_only_where_its_mode_says(standing, mode):
    alpha = np.asarray(standing[1])
    feet = footing(alpha)
    coverage = shadow_coverage(alpha, grounded(mode))
    shadowed = coverage > 0.02
    rows = np.flatnonzero(shadowed.any(axis=1))
    assert rows.size and rows.min() > feet.top + feet.height // 2  # nothing above the product: all near the ground
    below = coverage[feet.ground + 1:]
    assert below.max() > 0.3  # and some of it below the ground line, where the product cannot hide it
    if mode == "contact":  # tight: fades within a few percent of the product's height
        assert rows.max() < feet.ground + 0.1 * feet.height
    if mode == "floating":  # detached: the ground line itself stays (almost) clear, the shadow is lower
        peak_row = int(np.argmax(coverage.max(axis=1)))
        assert coverage[feet.ground].max() < 0.25 * coverage.max() and peak_row > feet.ground + 0.05 * feet.height
    if mode in ("soft", "hard"):  # cast away from a front-left light (315°): to the right of the product
        cols = np.flatnonzero(shadowed.any(axis=0))
        assert cols.max() > feet.right + 0.1 * feet.height and cols.min() >= feet.left - 0.05 * feet.height


def test_the_cast_shadow_falls_away_from_the_light(standing):
    alpha = np.asarray(standing[1])
    feet = footing(alpha)
    centre = (feet.left + feet.right) / 2

    def weight_x(angle):
        coverage = shadow_coverage(alpha, grounded("hard", shadow_angle=angle))
        outside = coverage * (alpha == 0)
        return float((outside.sum(axis=0) * np.arange(alpha.shape[1])).sum() / outside.sum())

    assert weight_x(90) < centre - 5 < centre + 5 < weight_x(270)  # light from the right: shadow on the left


def test_a_floating_product_gets_a_detached_shadow_below_it():
    _, alpha = floating_product(300, 300)
    feet = footing(np.asarray(alpha))
    coverage = shadow_coverage(np.asarray(alpha), grounded("floating"))
    assert coverage[:feet.ground].max() < 0.05 and coverage[feet.ground + 2:].max() > 0.5


def test_darkness_grows_with_opacity(standing):
    darkest = [1 - ground_layer(np.asarray(standing[1]), grounded("soft", shadow_opacity=o)).shade.min()
               for o in (0.2, 0.5, 0.9)]
    assert darkest[0] < darkest[1] < darkest[2] and darkest[2] > 0.5


@pytest.mark.parametrize("settings", [
    {"shadow": "contact"}, {"shadow": "soft", "shadow_opacity": 1.0}, {"shadow": "hard", "shadow_angle": 90},
    {"shadow": "floating", "shadow_length": 0.25}, {"reflection": 1.0}, {"shadow": "soft", "reflection": 0.5},
])
def test_outputs_differ_only_in_the_layers_region_and_never_on_the_product(standing, settings):
    photo, alpha = standing
    plain = np.asarray(compose(photo, alpha).image, dtype=int)
    result = compose(photo, alpha, **settings)
    layered = np.asarray(result.image, dtype=int)
    a = np.asarray(alpha)
    assert (layered[a == 255] == np.asarray(photo, dtype=int)[a == 255]).all()  # product pixels untouched
    changed = np.abs(layered - plain).max(axis=2) > 0
    feet = footing(a)
    assert changed.any() and not changed[:feet.top + feet.height // 2].any()  # only low, near the ground
    assert (layered <= plain).all() or settings.get("reflection")  # a shadow only darkens
    assert result.layer is not None and result.product_change is None


def test_the_default_request_is_byte_identical_to_plain_compositing(standing):
    from pipeline.stages.compose import composite_product

    photo, alpha = standing
    request = request_for(photo, alpha)
    prepared = prepare_inputs(request, native_resolution=256)
    background = reference_scene("wood", 200, 300)
    before = composite_product(prepared.product_pixels, prepared.alpha_pixels, background, prepared.edge)
    composed = compose_grounded(request, prepared, background)
    assert composed.image.tobytes() == before.tobytes() and composed.layer is None
    assert compose_output(request, prepared, background).tobytes() == before.tobytes()
    # Light match at 0 and a shadow at opacity 0 are the same as none.
    for off in ({"light_match": 0.0}, {"shadow": "soft", "shadow_opacity": 0.0}):
        again = request_for(photo, alpha, **off)
        assert compose_output(again, prepare_inputs(again, 256), background).tobytes() == before.tobytes()


def test_original_keeps_the_photos_shadow_to_within_15_percent(shot_with_shadow):
    photo, alpha, truth = shot_with_shadow
    found = photo_shading(np.asarray(photo), np.asarray(alpha)).shading
    free = np.asarray(alpha) == 0
    core = free & (truth >= 0.45)
    assert abs(found[core].mean() - truth[core].mean()) < 0.15 * truth[core].mean()
    # Carried onto a plain background: the darkness there is the photo's.
    result = np.asarray(compose(photo, alpha, shadow="original").image, dtype=np.float32)
    darkness = 1 - result[core].mean(axis=0) / 180
    assert np.all(np.abs(darkness - truth[core].mean()) < 0.15 * truth[core].mean())
    assert (result[(truth < 0.01) & free][:, 0] >= 179).mean() > 0.95  # where the photo had no shadow, none


def test_original_leaves_out_gradients_and_stains_far_from_the_product(shot_with_shadow):
    photo, alpha, truth = shot_with_shadow
    pixels = np.asarray(photo, dtype=np.float32).copy()
    width = truth.shape[1]
    pixels *= np.linspace(1.0, 0.88, width)[None, :, None]  # a sweep's gradient, left to right
    pixels[20:45, 15:40] *= 0.6  # a dark stain in a corner, not touching the product
    found = photo_shading(np.clip(pixels, 0, 255).astype(np.uint8), np.asarray(alpha)).shading
    assert found[20:45, 15:40].max() < 0.02
    free = np.asarray(alpha) == 0
    assert found[free & (truth < 0.01)].mean() < 0.02  # the gradient is not shadow
    core = free & (truth >= 0.45)
    assert abs(found[core].mean() - truth[core].mean()) < 0.15 * truth[core].mean()


def test_original_moves_and_scales_with_the_product_when_framed():
    photo, alpha, truth = product_with_shadow(width=400, height=400, darkness=0.5)
    shading = photo_shading(np.asarray(photo), np.asarray(alpha))
    # Framing: the product at half size, placed with its top-left at (300, 500) on an 800x1000 canvas.
    placement = np.array([[0.5, 0.0, 300.0], [0.0, 0.5, 500.0]])
    placed = place_shading(shading, placement, (800, 1000))
    ys, xs = np.nonzero(truth > 0.45)
    scale = placed.shape[0] / 1000  # the placed shading is at the output's working size
    peak = (np.array(np.unravel_index(np.argmax(placed), placed.shape)) + 0.5) / scale - 0.5
    assert abs(peak[0] - (500 + 0.5 * ys.mean())) < 6 and abs(peak[1] - (300 + 0.5 * xs.mean())) < 20
    assert abs(placed.max() - 0.5) < 0.075
    identity = place_shading(shading, photo_to_output((400, 400), (400, 400)), (400, 400))
    assert np.abs(identity - shading.shading).max() < 1e-4


def test_original_follows_the_product_onto_a_framed_canvas(shot_with_shadow):
    """Through a real request: the photo's own shadow is found on the photo as taken and lands beside the
    product wherever framing places it, as dark as it was."""
    photo, alpha, truth = shot_with_shadow
    request = request_for(photo, alpha, shadow="original", canvas="600x400", padding=0.05, placement="left")
    prepared = prepare_inputs(request, native_resolution=256)
    result = np.asarray(compose_grounded(request, prepared, GREY).image, dtype=np.float32)
    box = prepared.placement.box  # left, top, width, height of the product on the canvas
    left, top, right, bottom = prepared.placement.source
    scale = box[2] / (right - left)
    ys, xs = np.nonzero((truth >= 0.45) & (np.asarray(alpha) == 0))  # the shadow's core in the photo
    where_y = np.round(box[1] + (ys - top + 0.5) * scale - 0.5).astype(int)
    where_x = np.round(box[0] + (xs - left + 0.5) * scale - 0.5).astype(int)
    inside = (where_y >= 0) & (where_y < 400) & (where_x >= 0) & (where_x < 600)
    darkness = 1 - result[where_y[inside], where_x[inside], 0].mean() / 180
    assert abs(darkness - truth[ys, xs].mean()) < 0.15 * truth[ys, xs].mean()
    assert result[:, 450:, 0].min() >= 179  # the right of the canvas, far from the product: no shadow


@pytest.mark.parametrize("backdrop", ["busy", "dark"])
def test_original_refuses_a_photo_without_a_plain_backdrop(backdrop):
    photo, alpha = perfume_bottle(300, 400)
    if backdrop == "busy":
        scene = np.asarray(reference_scene("jungle", 300, 400), dtype=np.float32)
    else:
        scene = np.full((400, 300, 3), 20.0, np.float32)
    weight = np.asarray(alpha, dtype=np.float32)[..., None] / 255
    mixed = np.asarray(photo, dtype=np.float32) * weight + scene * (1 - weight)
    shot = Image.fromarray(mixed.astype(np.uint8))
    request = request_for(shot, alpha, shadow="original")
    with pytest.raises(BackdropError, match="shadow: 'original' keeps the photo's own shadow.*choose another "
                                            "shadow mode"):
        prepare_inputs(request, native_resolution=256)


def test_light_match_zero_is_bit_identical_and_one_moves_toward_a_tinted_scene(standing):
    photo, alpha = standing
    blue = Image.new("RGB", (64, 64), (40, 70, 200))
    solid = np.asarray(alpha) == 255
    untouched = compose(photo, alpha, blue, light_match=0.0)
    assert (np.asarray(untouched.image)[solid] == np.asarray(photo)[solid]).all()
    assert untouched.product_change is None
    matched = compose(photo, alpha, blue, light_match=1.0)
    before = np.asarray(photo, dtype=np.float32)[solid].mean(axis=0)
    after = np.asarray(matched.image, dtype=np.float32)[solid].mean(axis=0)

    def blueness(rgb):
        return rgb[2] / rgb.sum()

    assert blueness(after) > blueness(before) + 0.03
    assert matched.product_change > 5 and matched.layer is None
    half = compose(photo, alpha, blue, light_match=0.5)
    assert 0 < half.product_change < matched.product_change


def test_grounding_works_at_the_generated_size_too(standing):
    photo, alpha = standing
    result = compose(photo, alpha, reference_scene("wood", 256, 320), shadow="soft", reflection=0.3,
                     output_size="generation")
    assert result.image.size == (192, 256) or result.image.size[0] * result.image.size[1] < 300 * 400


@pytest.mark.parametrize(("field", "value", "words"), [
    ("shadow", "dramatic", "shadow: 'dramatic' is unknown; expected one of 'none', 'contact', 'soft'"),
    ("shadow_opacity", 2, "shadow_opacity: 2 is out of range; expected a number from 0 to 1"),
    ("shadow_angle", "north", "shadow_angle: 'north' is not a number; expected a number from 0 to 360"),
    ("shadow_softness", -1, "shadow_softness: -1 is out of range"),
    ("shadow_length", 5, "shadow_length: 5 is out of range; expected a number from 0 to 2"),
    ("reflection", 1.5, "reflection: 1.5 is out of range; expected a number from 0 to 1"),
    ("light_match", "lots", "light_match: 'lots' is not a number"),
])
def test_each_wrong_value_is_refused_naming_its_field(field, value, words):
    with pytest.raises(BackdropError) as caught:
        request_for(*perfume_bottle(64, 64), **{field: value})
    assert words in str(caught.value) and caught.value.field == field
