"""The quality check on every image: expansion on constructed outputs (real u2netp), mask uncertainty, the
verdict and its thresholds, and where the figures are recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scenes import perfume_bottle, reference_scene

from pipeline import generate
from pipeline.stages.quality import check_quality, expansion, mask_uncertainty, quality_headers, quality_summary

THRESHOLDS = {"qa_max_expansion": 0.05, "qa_max_mask_uncertainty": 0.35, "qa_max_product_change": 0.1,
              "qa_max_upscale": 2.0}


@pytest.fixture(scope="module")
def placed():
    """The bottle laid over a jungle scene, untouched: (output, the bottle's photo, its alpha)."""
    photo, alpha = perfume_bottle(512, 512)
    scene = np.asarray(reference_scene("jungle", 512, 512).convert("RGB"), dtype=np.float32)
    weight = np.asarray(alpha, dtype=np.float32)[..., None] / 255
    pixels = np.asarray(photo.convert("RGB"), dtype=np.float32) * weight + scene * (1 - weight)
    return Image.fromarray(pixels.astype(np.uint8)), photo.convert("RGB"), alpha


def taller(output: Image.Image, photo: Image.Image, alpha: Image.Image, extra: int) -> tuple[Image.Image, float]:
    """The output with the bottle stretched ``extra`` px taller (the model "painted a taller bottle"), and the
    product area that adds, as a fraction of the bottle's."""
    solid = np.asarray(alpha) >= 128
    rows = np.nonzero(solid.any(axis=1))[0]
    top, bottom = rows[0], rows[-1] + 1
    size = (photo.width, bottom - top + extra)
    stretched = photo.crop((0, top, photo.width, bottom)).resize(size)
    stretched_alpha = alpha.crop((0, top, photo.width, bottom)).resize(size)
    extended = output.copy()
    extended.paste(stretched, (0, top - extra), stretched_alpha)
    grown = np.zeros_like(solid)
    grown[top - extra:bottom] = np.asarray(stretched_alpha) >= 128
    return extended, float((grown & ~solid).sum() / solid.sum())


def test_an_untouched_product_reports_under_one_percent(u2netp_home, placed):
    output, _, alpha = placed
    assert expansion(output, alpha, "u2netp") < 0.01


@pytest.mark.parametrize("extra", [30, 60])
def test_a_product_extended_by_a_known_area_reports_that_fraction(u2netp_home, placed, extra):
    extended, added = taller(*placed, extra)
    assert added > 0.08
    assert expansion(extended, placed[2], "u2netp") == pytest.approx(added, rel=0.2)


def test_a_second_product_beside_the_first_is_counted(u2netp_home, placed):
    output, photo, alpha = placed
    extended = output.copy()
    extended.paste(photo.resize((256, 256)), (300, 200), alpha.resize((256, 256)))
    second = np.zeros((512, 512), bool)
    second[200:456, 300:512] = (np.asarray(alpha.resize((256, 256))) >= 128)[:, :212]
    added = (second & ~(np.asarray(alpha) >= 128)).sum() / (np.asarray(alpha) >= 128).sum()
    assert expansion(extended, alpha, "u2netp") == pytest.approx(added, rel=0.2)


def test_mask_uncertainty_is_the_share_of_the_mask_neither_product_nor_backdrop():
    mask = np.zeros((100, 100), np.uint8)
    mask[20:80, 20:50] = 255  # 1800 px sure
    assert mask_uncertainty(Image.fromarray(mask)) == 0
    mask[20:80, 50:80] = 128  # 1800 px unsure
    assert mask_uncertainty(Image.fromarray(mask)) == pytest.approx(0.5)
    mask[0:10, 0:10] = 10  # faint backdrop specks are backdrop, not doubt
    assert mask_uncertainty(Image.fromarray(mask)) == pytest.approx(0.5)


def test_the_verdict_names_each_figure_over_its_threshold(u2netp_home, placed):
    extended, _ = taller(*placed, 60)
    quality = check_quality(extended, placed[2], mask_model="u2netp", thresholds=THRESHOLDS, uncertainty=0.5,
                            upscale=1.0)
    assert quality["verdict"] == "review" and quality["over"] == ["expansion", "mask_uncertainty"]
    summary = quality_summary(quality)
    assert summary.startswith("review (expansion, mask_uncertainty)") and "mask uncertainty 50.0% over" in summary
    lenient = THRESHOLDS | {"qa_max_expansion": 1.0, "qa_max_mask_uncertainty": 0.6}
    quality = check_quality(extended, placed[2], mask_model="u2netp", thresholds=lenient, uncertainty=0.5,
                            upscale=3.0, product_change=0.02)
    assert quality["verdict"] == "review" and quality["over"] == ["upscale"]
    assert quality_summary(quality) == (f"review (upscale) · expansion {100 * quality['expansion']:.1f}% · "
                                        "mask uncertainty 50.0% · product change 2.0% · upscale 3.0x over")


def test_a_mask_model_not_on_this_machine_leaves_expansion_unmeasured(placed, monkeypatch):
    from pipeline.stages import quality as module

    monkeypatch.setattr(module, "mask_model_ready", lambda name: False)
    quality = check_quality(placed[0], placed[2], mask_model="birefnet-general-lite", thresholds=THRESHOLDS,
                            uncertainty=0.0, upscale=1.0)
    assert quality["expansion"] is None and quality["verdict"] == "ok"
    assert "not on this machine" in quality["notes"][0]
    assert "expansion not measured" in quality_summary(quality)
    assert quality_headers([quality])["x-quality-expansion"] == ""


@pytest.mark.slow
def test_every_image_is_checked_and_its_figures_saved_with_it(u2netp_home, tiny_models, make_request, tmp_path):
    """Both samples get their own figures, in the result, the sidecar and the image itself; the same request
    and seed still save byte-identical files (the figures carry no timing)."""
    from pipeline.workflows.metadata import read_metadata
    from pipeline.workflows.outputs import save_result

    request = make_request(seed=5, samples=2, mask_model="u2netp", qa_max_upscale=1.0)
    result = generate(request, models=tiny_models)
    qualities = result.info["quality"]
    assert len(qualities) == 2 and all(q["expansion"] is not None and q["upscale"] == 1.0 for q in qualities)
    assert all(q["verdict"] == ("review" if q["over"] else "ok") for q in qualities)
    assert "quality" in result.timings
    first = save_result(result, tmp_path / "one", stem="bottle")
    second = save_result(generate(request, models=tiny_models), tmp_path / "two", stem="bottle")
    for index, (a, b) in enumerate(zip(first, second)):
        assert a.read_bytes() == b.read_bytes()
        assert json.loads(a.with_suffix(".json").read_text())["quality"] == qualities[index]
        assert read_metadata(a)["quality"] == qualities[index]


def test_the_generation_sized_output_is_compared_with_the_generation_sized_alpha(u2netp_home, tiny_models,
                                                                                make_request):
    result = generate(make_request(mask_model="u2netp", output_size="generation"), models=tiny_models)
    quality = result.info["quality"][0]
    assert quality["upscale"] == pytest.approx(result.images[0].width / 512, abs=0.001)
    assert quality["expansion"] is not None


def test_light_match_changes_are_checked_as_a_share_of_the_full_range(u2netp_home, make_request):
    """The product_change light match reports (8-bit levels, per image) is the check's figure over 255, and a
    threshold under it sends that image to review: here a grey scene moves the bottle shot on white past the
    default 0.1, an orange one less."""
    from pipeline.stages import prepare

    request = make_request(mask_model="u2netp", samples=2, light_match=1.0)
    prepared = prepare.prepare_inputs(request, 96)
    neutral, warm = (Image.new("RGB", prepared.size, colour) for colour in ((128, 128, 128), (230, 120, 40)))
    result = prepare.finish_result(request, prepared, [neutral, warm], [1, 2], timings={}, started=0.0,
                                   backend="local", info={})
    levels = result.info["product_change"]
    figures = [q["product_change"] for q in result.info["quality"]]
    assert figures == [round(change / 255, 4) for change in levels] and all(figures)
    assert [q["verdict"] for q in result.info["quality"]] == ["review", "ok"], figures
    assert result.info["quality"][0]["over"] == ["product_change"]
    untouched = prepare.finish_result(make_request(mask_model="u2netp"), prepared, [warm], [1], timings={},
                                      started=0.0, backend="local", info={})
    assert untouched.info["quality"][0]["product_change"] == 0.0 and "product_change" not in untouched.info



def test_a_product_enlarged_onto_a_canvas_reports_its_enlargement(u2netp_home, make_request):
    """A 256 px bottle framed on a 1024 px canvas is enlarged about 5x: upscale says so and goes to review over
    the default 2x. At the generation's size (96 px here) it is the placement's scale times that size over the
    canvas's, as framing's own ``scale`` says."""
    from pipeline.stages import prepare

    photo, alpha = perfume_bottle(256, 256)
    for output_size in ("input", "generation"):
        request = make_request(image=photo, mask=alpha, canvas="1024x1024", mask_model="u2netp",
                               output_size=output_size)
        prepared = prepare.prepare_inputs(request, 128)
        result = prepare.finish_result(request, prepared, [reference_scene("wood", *prepared.size)], [1],
                                       timings={}, started=0.0, backend="local", info={})
        quality = result.info["quality"][0]
        expected = result.info["scale"] * result.images[0].width / 1024
        assert quality["upscale"] == pytest.approx(expected, abs=0.01), output_size
        assert ("upscale" in quality["over"]) == (output_size == "input") and result.info["scale"] > 5
