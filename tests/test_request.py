"""The request contract: SPEC §1's fields, defaults and ranges, and a clear error for every bad value."""

from __future__ import annotations

import dataclasses
import math

import pytest
from PIL import Image

from pipeline import FIELDS, SCHEDULER_NAMES, BackdropError, BgReplaceRequest

SPEC_DEFAULTS = {
    "negative_prompt": None,
    "samples": 1,
    "scheduler": "DPM2 Karras",
    "num_inference_steps": 25,
    "guidance_scale": 7.5,
    "seed": -1,
    "strength": 1.0,
    "cn_weight": 0.9,
    "ip_adapter_weight": 0.5,
}
SPEC_RANGES = {
    "samples": (1, 4),
    "num_inference_steps": (20, 100),
    "guidance_scale": (1, 25),
    "seed": (-1, 999_999_999_999_999),
    "strength": (0, 1),
    "cn_weight": (0, 1),
    "ip_adapter_weight": (0, 1),
}
SPEC_SCHEDULERS = ["DDIM", "DPM Multi", "DPM Single", "Euler a", "Euler", "Heun", "DPM2 a Karras",
                   "DPM2 Karras", "LMS", "PNDM", "UniPC"]
NUMERIC_FIELDS = [name for name, spec in FIELDS.items() if spec.kind in ("int", "float")]


def _shown(number):
    return f"{number:g}" if isinstance(number, float) else str(number)


@pytest.fixture(scope="module")
def images():
    return Image.new("RGB", (128, 96), "white"), Image.new("RGB", (96, 96), "green")


def build(images, **fields):
    return BgReplaceRequest(image=images[0], ref_image=images[1], prompt="a bottle", **fields)


def test_defaults_match_the_hosted_contract(images):
    request = build(images)
    for name, value in SPEC_DEFAULTS.items():
        assert getattr(request, name) == value, name
        assert FIELDS[name].default == value


def test_the_dataclass_fields_are_FIELDS_in_the_same_order():
    declared = [field.name for field in dataclasses.fields(BgReplaceRequest) if field.name != "sources"]
    assert declared == list(FIELDS)


def test_a_request_made_with_no_options_has_every_FIELDS_default(images, monkeypatch):
    monkeypatch.delenv("BACKDROP_MASK_MODEL", raising=False)
    request = build(images)
    for name, spec in FIELDS.items():
        if not spec.required:
            assert getattr(request, name) == spec.default, name


def test_an_environment_default_is_read_when_a_request_is_made_not_at_import(images, monkeypatch):
    monkeypatch.setenv("BACKDROP_MASK_MODEL", "u2netp")
    assert build(images).mask_model == "u2netp"
    monkeypatch.delenv("BACKDROP_MASK_MODEL")
    assert build(images).mask_model == FIELDS["mask_model"].default


def test_ranges_match_the_hosted_contract():
    for name, (low, high) in SPEC_RANGES.items():
        assert (FIELDS[name].minimum, FIELDS[name].maximum) == (low, high), name


def test_every_hosted_scheduler_name_is_accepted_plus_dpmpp(images):
    assert set(SPEC_SCHEDULERS) <= set(SCHEDULER_NAMES)
    assert "DPM++ 2M Karras" in SCHEDULER_NAMES
    for name in SCHEDULER_NAMES:
        assert build(images, scheduler=name).scheduler == name


def test_scheduler_names_forgive_case_and_spacing(images):
    assert build(images, scheduler="euler  a").scheduler == "Euler a"


def test_unknown_scheduler_lists_the_allowed_ones(images):
    with pytest.raises(BackdropError) as caught:
        build(images, scheduler="Turbo")
    message = str(caught.value)
    assert message.startswith("scheduler:") and "'Turbo'" in message
    assert all(name in message for name in SPEC_SCHEDULERS)


@pytest.mark.parametrize("name", NUMERIC_FIELDS)
def test_numeric_fields_accept_their_whole_range(images, name):
    spec = FIELDS[name]
    middle = (spec.minimum + spec.maximum) / 2
    for value in (spec.minimum, spec.maximum, int(middle) if spec.kind == "int" else middle):
        if name == "canny_low":
            value = min(value, 200)
        if name == "strength":
            value = max(value, 0.04)  # below 1/steps no step is left to run (see the test below)
        fields = {name: value} | ({"canny_low": 0} if name == "canny_high" else {})
        fields |= {"canvas": "2000x2000"} if name == "padding" else {}  # padding places on a canvas
        assert getattr(build(images, **fields), name) == value


@pytest.mark.parametrize("name", NUMERIC_FIELDS)
def test_numeric_fields_reject_out_of_range_naming_field_value_and_range(images, name):
    spec = FIELDS[name]
    step = 1 if spec.kind == "int" else 0.5
    for value in (spec.minimum - step, spec.maximum + step):
        with pytest.raises(BackdropError) as caught:
            build(images, **{name: value})
        message = str(caught.value)
        assert message.startswith(f"{name}:"), message
        assert repr(value) in message and "out of range" in message
        assert f"from {_shown(spec.minimum)} to {_shown(spec.maximum)}" in message


@pytest.mark.parametrize("name", NUMERIC_FIELDS)
@pytest.mark.parametrize("bad", ["abc", [1], {"a": 1}, True, math.nan, math.inf])
def test_numeric_fields_reject_wrong_types(images, name, bad):
    with pytest.raises(BackdropError) as caught:
        build(images, **{name: bad})
    assert str(caught.value).startswith(f"{name}:")


def test_integer_fields_reject_fractions_but_accept_whole_floats_and_numeric_text(images):
    with pytest.raises(BackdropError, match=r"samples: 2\.5 is not a whole number"):
        build(images, samples=2.5)
    assert build(images, samples=2.0).samples == 2
    assert build(images, samples="3", guidance_scale="4.5").guidance_scale == 4.5


def test_prompt_is_required_and_must_be_text(images):
    for bad in ("", "   ", None):
        with pytest.raises(BackdropError, match="^prompt:"):
            BgReplaceRequest(image=images[0], ref_image=images[1], prompt=bad)
    with pytest.raises(BackdropError, match="^prompt: 42 is a int, not text"):
        BgReplaceRequest(image=images[0], ref_image=images[1], prompt=42)


def test_prompts_are_cleaned_and_bounded(images):
    assert build(images, negative_prompt="  ").negative_prompt is None
    request = BgReplaceRequest(image=images[0], ref_image=images[1], prompt="a\x00bottle\x07 ")
    assert request.prompt == "a bottle"
    with pytest.raises(BackdropError, match="^prompt: 5000 characters is too long; at most 2000"):
        BgReplaceRequest(image=images[0], ref_image=images[1], prompt="x" * 5000)


def test_base64_flag_takes_booleans_and_the_docs_numeric_form(images):
    assert build(images, base64=1).base64 is True
    assert build(images, base64="false").base64 is False
    with pytest.raises(BackdropError, match="^base64:"):
        build(images, base64="maybe")


@pytest.mark.parametrize("name", ["mask_model", "output_size", "output_format"])
def test_backdrop_choices_reject_unknown_names_listing_the_allowed(images, name):
    with pytest.raises(BackdropError) as caught:
        build(images, **{name: "nope"})
    assert str(caught.value).startswith(f"{name}: 'nope' is unknown; expected one of")
    assert all(repr(choice) in str(caught.value) for choice in FIELDS[name].choices)


def test_canny_thresholds_must_be_ordered(images):
    with pytest.raises(BackdropError, match="^canny_low: 220 is above canny_high"):
        build(images, canny_low=220, canny_high=100)


def test_images_are_required_and_must_be_images(images):
    with pytest.raises(BackdropError, match="^ref_image: is required"):
        BgReplaceRequest.from_dict({"image": images[0], "prompt": "x"})
    with pytest.raises(BackdropError, match="^image: expected an image"):
        build((12345, images[1]))


def test_from_dict_rejects_unknown_fields_by_name(images):
    with pytest.raises(BackdropError, match="unknown field 'cfg'; allowed: image, ref_image, prompt"):
        BgReplaceRequest.from_dict({"image": images[0], "ref_image": images[1], "prompt": "x", "cfg": 3})
    with pytest.raises(BackdropError, match="must be a JSON object, not list"):
        BgReplaceRequest.from_dict([1, 2])


def test_null_means_default(images):
    request = BgReplaceRequest.from_dict(
        {"image": images[0], "ref_image": images[1], "prompt": "x", "samples": None, "cn_weight": None}
    )
    assert (request.samples, request.cn_weight) == (1, 0.9)


def test_settings_round_trip_through_from_dict(images):
    request = build(images, samples=3, scheduler="UniPC", seed=77, cn_weight=0.4, mask_grow=-3)
    again = BgReplaceRequest.from_dict(request.settings() | {"image": images[0], "ref_image": images[1]})
    assert again.settings() == request.settings()
    assert "image" not in request.settings() and "ref_image" not in request.settings()


def test_replace_validates_too(images):
    request = build(images)
    assert request.replace(cn_weight=0.1).cn_weight == 0.1
    with pytest.raises(BackdropError, match="^cn_weight:"):
        request.replace(cn_weight=2)


@pytest.mark.parametrize(("steps", "least"), [(20, 0.05), (25, 0.04), (30, 0.034), (100, 0.01)])
def test_a_strength_that_leaves_no_step_is_refused_naming_the_least_that_works(images, steps, least):
    """diffusers runs int(steps * strength) steps and fails from inside the pipeline when that is 0."""
    with pytest.raises(BackdropError) as caught:
        build(images, num_inference_steps=steps, strength=least - 0.001)
    message = str(caught.value)
    assert message.startswith("strength:") and f"at least {least:g}" in message and f"{steps} steps" in message
    assert build(images, num_inference_steps=steps, strength=least).strength == least
    with pytest.raises(BackdropError, match="^strength: 0 leaves no denoising step at 20 steps"):
        build(images, num_inference_steps=20, strength=0)
    with pytest.raises(BackdropError, match="^strength: 0.02 leaves no denoising step"):
        build(images).replace(num_inference_steps=20, strength=0.02)
