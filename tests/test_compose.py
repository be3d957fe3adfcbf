"""Generation sizes and laying the untouched product back over a new background."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scenes import perfume_bottle

from pipeline.stages.compose import composite_product, generation_size


@pytest.mark.parametrize("size", [(900, 600), (600, 1200), (1024, 1024), (6000, 4000), (4000, 6000), (333, 777)])
def test_generation_size_is_about_a_megapixel_in_the_inputs_aspect(size):
    width, height = generation_size(*size, side=1024)
    assert width % 8 == 0 and height % 8 == 0
    assert 0.9 < width * height / 1024**2 < 1.1
    assert abs(width / height - size[0] / size[1]) < 0.02 * size[0] / size[1] + 8 / height


def test_generation_size_keeps_extreme_panoramas_sane():
    width, height = generation_size(10000, 100, side=1024)
    assert width <= 2048 and height >= 64 and width % 8 == 0 and height % 8 == 0


def test_solid_product_pixels_are_exact_and_no_backdrop_fringe_survives():
    photo, alpha = perfume_bottle(600, 400)
    green = Image.new("RGB", (120, 80), (0, 160, 0))
    out = np.asarray(composite_product(photo, alpha, green)).astype(int)
    a = np.asarray(alpha)
    assert out.shape == (400, 600, 3)
    assert (out[a == 255] == np.asarray(photo).astype(int)[a == 255]).all()
    assert (out[a == 0] == (0, 160, 0)).all()
    # On the soft edge the white studio backdrop must not show: nothing lighter than both product and new bg.
    edge = (a > 0) & (a < 255)
    product_max = np.asarray(photo)[a == 255].max(axis=0)
    assert (out[edge] <= np.maximum(product_max, (0, 160, 0)) + 1).all()


def test_a_background_of_another_shape_is_cropped_not_stretched():
    from pipeline.stages.compose import cover

    square = Image.new("RGB", (100, 100), (255, 0, 0))
    square.paste((0, 0, 255), (0, 0, 100, 25))  # a blue band across the top quarter
    wide = np.asarray(cover(square, (200, 100)))
    assert wide.shape == (100, 200, 3)
    assert (wide[0, :, 2] < 50).all()  # the crop kept the middle: the band is gone, not squashed
