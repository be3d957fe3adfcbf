"""Side-by-side comparisons, presets and settings that travel inside every saved image."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import running_studio

from pipeline import BackdropError, BgReplaceRequest, generate
from pipeline.workflows.metadata import read_metadata, settings_from_metadata
from pipeline.workflows.outputs import save_result
from pipeline.workflows.presets import BUILTIN_DIR, list_presets, load_preset_file, save_user_preset
from pipeline.workflows.sweep import parse_axis_values, run_columns, run_grid

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["default", "furniture-indoor", "furniture-outdoor", "running-shoes-outdoor", "jewelry", "perfume-cosmetics"]


def local(tiny_models):
    return lambda request, **hooks: generate(request, models=tiny_models, **hooks)


@pytest.mark.slow
def test_a_3x2_grid_has_six_cells_in_axis_order_with_labels(tiny_models, make_request):
    comparison = run_grid(make_request(resolution=64), local(tiny_models), "cn_weight", [0.0, 0.5, 1.0],
                          "scheduler", ["Euler", "DDIM"])
    assert [cell.label for cell in comparison.cells] == [
        "cn_weight=0 · scheduler=Euler", "cn_weight=0.5 · scheduler=Euler", "cn_weight=1 · scheduler=Euler",
        "cn_weight=0 · scheduler=DDIM", "cn_weight=0.5 · scheduler=DDIM", "cn_weight=1 · scheduler=DDIM"]
    assert [(c.request.cn_weight, c.request.scheduler) for c in comparison.cells] == [
        (0.0, "Euler"), (0.5, "Euler"), (1.0, "Euler"), (0.0, "DDIM"), (0.5, "DDIM"), (1.0, "DDIM")]
    assert len({cell.result.seeds[0] for cell in comparison.cells}) == 1  # one seed everywhere
    assert comparison.x_labels == ("0", "0.5", "1") and comparison.y_labels == ("Euler", "DDIM")
    grid = np.asarray(comparison.grid)
    assert comparison.grid.width > 3 * 300 and comparison.grid.height > 2 * 300
    assert (grid[:30] < 128).any()  # the axis names are drawn in the header
    first_cell = np.asarray(comparison.cells[0].image.convert("RGB").resize((320, 320)))
    assert np.abs(grid[80:400, 180:500].astype(int) - first_cell.astype(int)).mean() < 8


@pytest.mark.slow
def test_a_3x3_sweep_runs_the_masker_and_image_encoder_once(u2netp_home, tiny_models, make_request, monkeypatch):
    import pipeline.stages.masking

    mask_calls, encoder_calls = [], []
    real_rembg = pipeline.stages.masking._rembg_alpha
    monkeypatch.setattr(pipeline.stages.masking, "_rembg_alpha",
                        lambda *a, **k: mask_calls.append(1) or real_rembg(*a, **k))
    hook = tiny_models.pipe.image_encoder.register_forward_hook(lambda *args: encoder_calls.append(1))
    try:
        comparison = run_grid(make_request(mask=None, mask_model="u2netp", resolution=64), local(tiny_models),
                              "cn_weight", [0.3, 0.6, 0.9], "guidance_scale", [4, 7, 10])
    finally:
        hook.remove()
    assert len(comparison.cells) == 9
    assert len(mask_calls) == 1 and len(encoder_calls) == 1
    assert comparison.reuse_counts == {"prepare": 1, "prompt": 1, "image_embeds": 1}


@pytest.mark.slow
def test_prompt_axis_recomputes_only_the_prompt(tiny_models, make_request):
    comparison = run_grid(make_request(resolution=64), local(tiny_models), "prompt",
                          parse_axis_values("prompt", "a bottle, on moss | a bottle on sand"))
    assert [cell.request.prompt for cell in comparison.cells] == ["a bottle, on moss", "a bottle on sand"]
    assert comparison.reuse_counts == {"prepare": 1, "prompt": 2, "image_embeds": 1}


@pytest.mark.slow
def test_a_shadow_axis_changes_only_the_background_around_the_products_base(tiny_models, make_request):
    values = parse_axis_values("shadow", "none, Contact, soft")
    comparison = run_grid(make_request(resolution=64), local(tiny_models), "shadow", values)
    assert [cell.request.shadow for cell in comparison.cells] == ["none", "contact", "soft"]
    assert comparison.reuse_counts["prepare"] == 1  # the mask and canny map are the same for every shadow
    plain, *shadowed = (np.asarray(cell.image, int) for cell in comparison.cells)
    alpha = np.asarray(comparison.cells[0].result.intermediates.subject_alpha)
    top = np.flatnonzero((alpha == 255).any(axis=1))[0]
    for image in shadowed:
        assert (image[alpha == 255] == plain[alpha == 255]).all() and (image[:top] == plain[:top]).all()
        assert (image != plain).any()
    with pytest.raises(BackdropError, match="^shadow_opacity: '2' is out of range"):
        parse_axis_values("shadow_opacity", "0.5, 2")


def test_axis_values_are_checked():
    assert parse_axis_values("cn_weight", "0.1, 0.5;0.9") == [0.1, 0.5, 0.9]
    assert parse_axis_values("scheduler", "euler a, ddim") == ["Euler a", "DDIM"]
    assert parse_axis_values("detail", "0, 0.5,1") == [0.0, 0.5, 1.0]
    with pytest.raises(BackdropError, match="^cn_weight: '2' is out of range"):
        parse_axis_values("cn_weight", "0.5, 2")
    with pytest.raises(BackdropError, match="^axis: 'mask_grow' cannot be swept"):
        parse_axis_values("mask_grow", "1, 2")
    with pytest.raises(BackdropError, match="^preset: 'nope' is unknown"):
        parse_axis_values("preset", "default, nope")


@pytest.mark.slow
def test_columns_of_different_output_sizes_prepare_each_size(tiny_models, make_request):
    base = make_request(resolution=64)
    columns = run_columns(base, {"input": (base, local(tiny_models)),
                                 "generation": (base.replace(output_size="generation"), local(tiny_models))}, "size")
    assert columns.reuse_counts["prepare"] == 2
    assert [cell.result.images[0].size for cell in columns.cells] == [base.image.size, (64, 64)]


@pytest.mark.slow
def test_ab_and_local_vs_hosted_columns(tiny_models, make_request):
    from fake_segmind import FakeSegmind

    from pipeline.backends.hosted import HostedSettings, generate_hosted

    base = make_request(resolution=64)
    ab = run_columns(base, {"A": (base.replace(cn_weight=0.9), local(tiny_models)),
                            "B": (base.replace(cn_weight=0.2), local(tiny_models))}, "settings")
    assert [cell.label for cell in ab.cells] == ["A", "B"] and ab.reuse_counts["prepare"] == 1
    with FakeSegmind(api_key="k") as service:
        settings = HostedSettings(url=service.url, api_key="k", backoff=0.01)
        both = run_columns(base, {"local": (base, local(tiny_models)),
                                  "hosted": (base, lambda r, **h: generate_hosted(r, settings=settings, **h))},
                           "backend")
    assert [cell.result.backend for cell in both.cells] == ["local", "hosted"]
    assert both.cells[0].result.seeds == both.cells[1].result.seeds


@pytest.mark.parametrize("slug", [pytest.param(slug, marks=() if slug == "default" else pytest.mark.slow)
                                  for slug in SHIPPED])  # the everyday run loads and runs one
def test_every_shipped_preset_loads_and_runs(tiny_models, make_request, slug):
    preset = list_presets()[slug]
    assert preset.source.parent == BUILTIN_DIR and preset.name and preset.description
    request = make_request(**preset.settings).replace(num_inference_steps=20, resolution=64)
    assert generate(request, models=tiny_models).images[0].size == (512, 512)
    if preset.reference:
        assert Image.open(preset.reference).size[0] >= 256


def test_shipped_presets_ground_their_products_as_the_kind_needs():
    presets = list_presets()
    grounding = {slug: {key: presets[slug].settings.get(key) for key in ("shadow", "shadow_opacity", "reflection")}
                 for slug in SHIPPED}
    assert grounding["default"] == {"shadow": None, "shadow_opacity": None, "reflection": None}  # as before
    assert grounding["furniture-indoor"]["shadow"] == grounding["furniture-outdoor"]["shadow"] == "soft"
    assert grounding["running-shoes-outdoor"]["shadow"] == "contact"
    assert grounding["jewelry"]["shadow"] == "contact" and grounding["jewelry"]["shadow_opacity"] < 0.5
    assert grounding["jewelry"]["reflection"] > 0
    assert grounding["perfume-cosmetics"]["shadow"] == "soft" and grounding["perfume-cosmetics"]["reflection"] > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"cn_weight": 3}', "cn_weight: 3 is out of range; expected a number from 0 to 1"),
        ('{"cfg_scale": 7}', "unknown key 'cfg_scale'; allowed: name, description, reference, prompt"),
        ('{"scheduler": "Turbo"}', "scheduler: 'Turbo' is unknown; expected one of 'DDIM'"),
        ('{"name": "x", ', "cannot read it as JSON"),
        ('["cn_weight"]', "must be a JSON object of settings"),
        ('{"reference": "no-such-picture.jpg"}', "'reference' 'no-such-picture.jpg' is not a file"),
    ],
)
def test_a_broken_preset_names_the_file_the_key_and_what_is_allowed(tmp_path, content, message):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(BackdropError) as caught:
        load_preset_file(path)
    assert str(caught.value).startswith(f"preset {path}: ") and message in str(caught.value)


def test_user_presets_are_saved_outside_the_repo_and_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_PRESETS_DIR", str(tmp_path / "mine"))
    path = save_user_preset("My Shoes!", {"cn_weight": 0.8, "scheduler": "euler a", "guidance_scale": "6"})
    assert path == tmp_path / "mine" / "my-shoes.json"
    preset = list_presets()["my-shoes"]
    assert preset.name == "My Shoes!" and preset.settings == {"cn_weight": 0.8, "scheduler": "Euler a",
                                                               "guidance_scale": 6.0}
    with pytest.raises(BackdropError, match="^cn_weight:"):
        save_user_preset("bad", {"cn_weight": 9})


@pytest.mark.parametrize("image_format", ["png", pytest.param("jpeg", marks=pytest.mark.slow)])
def test_settings_round_trip_through_the_saved_image(tiny_models, make_request, tmp_path, image_format, bottle,
                                                     reference):
    request = make_request(seed=77, cn_weight=0.65, scheduler="UniPC", negative_prompt="blur", mask_grow=2,
                           output_format=image_format, resolution=64)
    result = generate(request, models=tiny_models)
    (path,) = save_result(result, tmp_path)
    path.with_suffix(".json").unlink()  # the image alone must carry its settings
    settings = settings_from_metadata(read_metadata(path))
    restored = BgReplaceRequest.from_dict(settings | {"image": bottle[0], "ref_image": reference, "mask": bottle[1]})
    assert restored.settings() == request.settings()
    again = generate(restored, models=tiny_models)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))


def test_an_image_without_settings_is_explained(tmp_path):
    plain = tmp_path / "holiday.jpg"
    Image.new("RGB", (80, 80)).save(plain)
    with pytest.raises(BackdropError, match="^settings: holiday.jpg carries no Backdrop settings"):
        read_metadata(plain)


@pytest.mark.slow
def test_copy_as_api_request_is_a_working_curl_command(u2netp_home, tmp_path):
    """The command the studio shows, run by bash against the live REST endpoint."""
    from pipeline.interfaces.studio.handlers import copy_as_request
    from pipeline.interfaces.studio.screen import SETTING_INPUTS

    with running_studio(tmp_path / "out") as url:
        for name, source in (("product.jpg", "product-ring.jpg"), ("reference.jpg", "scene-marble.jpg")):
            (tmp_path / name).write_bytes((ROOT / "assets" / source).read_bytes())
        settings = {"prompt": 'ring on "marble" for $5', "scheduler": "Euler", "num_inference_steps": 20.0,
                    "seed": 4, "mask_model": "u2netp", "resolution": 64}
        command = copy_as_request("Local GPU", *[settings.get(name) for name in SETTING_INPUTS])
        command = command.replace("http://127.0.0.1:7860", url)
        assert "BACKDROP_API_KEY" in command and '"prompt": "ring on \\\\"marble\\\\" for \\$5"' in command
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert Image.open(tmp_path / "result.jpg").size == Image.open(tmp_path / "product.jpg").size
        hosted = copy_as_request("Hosted API", *[settings.get(name) for name in SETTING_INPUTS])
        assert "SEGMIND_API_KEY" in hosted and "mask_model" not in hosted and "api.segmind.com" in hosted
        # Images = 2: the reply is JSON, so the command saves it as such and writes out each image by seed
        # (it used to write the JSON into result.jpg).
        (tmp_path / "result.jpg").unlink()
        two = copy_as_request("Local GPU", *[(settings | {"samples": 2}).get(name) for name in SETTING_INPUTS])
        done = subprocess.run(["bash", "-c", two.replace("http://127.0.0.1:7860", url)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert not (tmp_path / "result.jpg").exists()
        for seed in (4, 5):
            assert Image.open(tmp_path / f"result_{seed}.jpg").size == Image.open(tmp_path / "product.jpg").size
