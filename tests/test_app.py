"""The studio (app.py) driven as its users drive it: gradio_client by keyword, and a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from servers import studio_page

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, u2netp_home, tiny_models):
    output_dir = tmp_path_factory.mktemp("outputs")
    with studio_page(output_dir) as url:
        yield url, output_dir


@pytest.fixture(scope="module")
def client(studio):
    from gradio_client import Client

    return Client(studio[0], verbose=False)


@pytest.mark.slow
def test_generate_by_keyword_returns_samples_images_first(client, studio):
    from gradio_client import handle_file

    gallery, before_after, intermediates, summary = client.predict(
        image=handle_file(str(ROOT / "assets" / "product-ring.jpg")),
        ref_image=handle_file(str(ROOT / "assets" / "scene-marble.jpg")),
        prompt="gold ring on marble", samples=3, scheduler="Euler", num_inference_steps=20, seed=11,
        mask_model="u2netp", resolution=64, api_key="sk-never-saved", api_name="/generate",
    )
    assert len(gallery) == 3
    assert [item["caption"] for item in gallery] == ["seed 11", "seed 12", "seed 13"]
    assert len(before_after) == 2 and len(intermediates) == 3
    assert "11, 12, 13" in summary
    saved = sorted(studio[1].glob("*.jpg"))
    assert len(saved) >= 3
    sidecar = json.loads(saved[0].with_suffix(".json").read_text())
    assert sidecar["request"]["prompt"] == "gold ring on marble" and sidecar["info"]["model_set"] == "tiny"
    assert not any(b"sk-never-saved" in path.read_bytes() for path in studio[1].iterdir())


@pytest.mark.slow
def test_cancel_stops_a_running_generation(studio, tiny_models):
    import gradio as gr

    from pipeline.interfaces.studio.handlers import Studio, cancel

    class Session:
        session_hash = "cancel-test"

    calls = []

    def progress(fraction, desc=None):  # stands in for gr.Progress: press Cancel once denoising runs
        calls.append(desc)
        if desc and desc.startswith("Step"):
            cancel(Session())

    studio_state = Studio("tiny", studio[1])
    outputs = studio_state.generate({"image": str(ROOT / "assets" / "product-ring.jpg"),
                                     "ref_image": str(ROOT / "assets" / "scene-marble.jpg"), "prompt": "ring",
                                     "scheduler": "Euler", "num_inference_steps": 20, "mask_model": "u2netp",
                                     "resolution": 64}, request=Session(), progress=progress)
    assert sum(1 for desc in calls if desc and desc.startswith("Step")) == 1
    assert outputs == tuple(gr.skip() for _ in range(4))  # every panel keeps what it showed: no "Error" badge


@pytest.mark.slow
def test_library_errors_reach_the_client_as_their_message(client):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    images = dict(image=handle_file(str(ROOT / "assets" / "product-ring.jpg")),
                  ref_image=handle_file(str(ROOT / "assets" / "scene-marble.jpg")))
    # Each message names the field as the screen does, with the API's name in brackets.
    with pytest.raises(AppError, match=r"Canny low \(canny_low\): 220 is above canny_high"):
        client.predict(**images, prompt="ring", canny_low=220, canny_high=100, api_name="/generate")
    with pytest.raises(AppError, match=r"Prompt \(prompt\): must not be empty"):
        client.predict(**images, prompt="   ", api_name="/generate")
    with pytest.raises(AppError,
                       match=r"ControlNet weight \(cn_weight\): 3.0 is out of range; expected a number from 0 to 1"):
        client.predict(**images, prompt="ring", cn_weight=3.0, api_name="/generate")
    with pytest.raises(AppError, match=r"Images \(samples\): 2.5 is not a whole number"):
        client.predict(**images, prompt="ring", samples=2.5, api_name="/generate")
    with pytest.raises(AppError, match=r"Product photo \(image\): upload a product photo"):
        client.predict(image=None, ref_image=None, prompt="ring", api_name="/generate")


# Start-up time (python app.py to its first HTTP 200, no model loaded): tests/test_benchmarks.py.


def test_a_product_photo_is_masked_as_it_arrives_and_generate_reuses_the_mask(u2netp_home, mask_model_runs):
    from pipeline.interfaces.studio.handlers import find_product_early
    from pipeline.interfaces.studio.values import build_request
    from pipeline.stages import masking
    from pipeline.stages.prepare import prepare_inputs

    runs = mask_model_runs
    photo, scene = str(ROOT / "assets" / "product-shoe.jpg"), str(ROOT / "assets" / "scene-wood.jpg")
    find_product_early(photo, None, "u2netp")
    assert len(runs) == 1
    request = build_request({"image": photo, "ref_image": scene, "prompt": "shoe", "mask_model": "u2netp"})
    prepare_inputs(request, 64)
    assert len(runs) == 1  # Generate's preparation found the photo's mask remembered

    masking.clear_mask_cache()
    find_product_early(photo, str(ROOT / "assets" / "product-ring.jpg"), "u2netp")  # the user's own mask
    find_product_early(None, None, "u2netp")
    find_product_early(str(ROOT / "README.md"), None, "u2netp")  # not an image: Generate will say so
    assert len(runs) == 1


def test_early_masking_never_downloads_a_mask_model(monkeypatch, tmp_path):
    from pipeline.interfaces.studio.handlers import find_product_early
    from pipeline.stages import masking

    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    monkeypatch.setenv("REMBG_HOME", str(tmp_path))
    monkeypatch.setattr(masking, "_new_session", lambda name: pytest.fail(f"{name} would be opened"))
    assert not masking.mask_model_ready("birefnet-general-lite")
    find_product_early(str(ROOT / "assets" / "product-shoe.jpg"), None, "birefnet-general-lite")


def test_the_studio_masks_on_upload_and_on_a_new_mask_model_off_the_gpu_line():
    import app

    demo = app.build_demo(model_set="tiny")
    early = [fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "find_product_early"]
    assert len(early) == 1
    triggers = {(demo.blocks[block].elem_id, event) for block, event in early[0].targets}
    assert triggers == {("image", "change"), ("mask_model", "change")}
    assert early[0].concurrency_id != "gpu" and early[0].trigger_mode == "always_last"


# --- a real browser ---------------------------------------------------------------------------------------

def open_studio(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.locator("#generate").wait_for(timeout=30_000)
    return page


def fill_inputs(page, prompt: str) -> None:
    page.locator("#image input[type=file]").set_input_files(str(ROOT / "assets" / "product-perfume.jpg"))
    page.locator("#ref_image input[type=file]").set_input_files(str(ROOT / "assets" / "scene-jungle.jpg"))
    page.locator("#prompt textarea").fill(prompt)
    page.get_by_text("Advanced settings").click()
    set_number(page, "samples", "2")
    set_number(page, "num_inference_steps", "20")
    set_number(page, "resolution", "64")
    choose(page, "mask_model", "u2netp")
    choose(page, "scheduler", "Euler")


def set_number(page, elem_id: str, value: str) -> None:
    from playwright.sync_api import expect

    box = page.locator(f"#{elem_id} input[type=number]")
    box.wait_for(state="visible")
    for _ in range(3):  # a freshly opened accordion may still re-render its inputs: check the value held
        box.fill(value)
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == value:
            break
    expect(box).to_have_value(value)


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.slow
def test_browser_generates_and_shows_gallery_and_slider(browser, studio):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = open_studio(browser, studio[0])
    fill_inputs(page, "perfume bottle on a mossy rock in a jungle")
    page.locator("#generate").click()
    expect(page.locator("#gallery .thumbnail-item")).to_have_count(2, timeout=120_000)
    expect(page.locator("#slider img").first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "studio-generated.png"), full_page=True)


@pytest.mark.slow
def test_browser_missing_prompt_shows_an_error_and_the_next_run_works(browser, studio):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = open_studio(browser, studio[0])
    fill_inputs(page, "")
    page.locator("#generate").click()
    toast = page.locator(".toast-body").filter(has_text="Prompt (prompt): must not be empty")
    expect(toast).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "studio-error.png"), full_page=True)
    page.locator("#prompt textarea").fill("perfume bottle in a jungle")
    page.locator("#generate").click()
    expect(page.locator("#gallery .thumbnail-item")).to_have_count(2, timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "studio-recovered.png"), full_page=True)


@pytest.mark.slow
def test_browser_hosted_toggle_gets_an_image_and_shows_credits(browser, studio, monkeypatch):
    from fake_segmind import FakeSegmind
    from playwright.sync_api import expect

    with FakeSegmind(api_key="ui-key") as service:
        monkeypatch.setenv("SEGMIND_API_URL", service.url)
        monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
        page = open_studio(browser, studio[0])
        fill_inputs(page, "perfume bottle in a jungle")
        page.locator("#backend").get_by_text("Hosted API").click()
        page.locator("#api_key input").fill("ui-key")
        page.locator("#generate").click()
        expect(page.locator("#gallery .thumbnail-item")).to_have_count(2, timeout=120_000)
        expect(page.locator("#summary")).to_contain_text("credits left: 98", timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "studio-hosted.png"), full_page=True)
        assert len(service.requests) == 2
        assert all(seen["headers"]["x-api-key"] == "ui-key" for seen in service.requests)


@pytest.mark.slow
def test_compare_and_load_settings_by_api(client, studio):
    from gradio_client import handle_file

    from pipeline.interfaces.studio.screen import SETTING_INPUTS

    grid, cells, summary = client.predict(
        image=handle_file(str(ROOT / "assets" / "product-ring.jpg")),
        ref_image=handle_file(str(ROOT / "assets" / "scene-marble.jpg")),
        prompt="gold ring on marble", scheduler="Euler", num_inference_steps=20, seed=21, mask_model="u2netp",
        resolution=64, mode="Grid", x_axis="cn_weight", x_values="0.2, 0.8", y_axis="none", y_values="",
        api_name="/compare",
    )
    assert [cell["caption"] for cell in cells] == ["cn_weight=0.2", "cn_weight=0.8"] and Path(grid).suffix == ".png"
    assert "2 cells" in summary
    restored = client.predict(file=handle_file(cells[1]["image"]), api_name="/load_settings")
    named = dict(zip(SETTING_INPUTS, restored))
    assert named["cn_weight"] == 0.8 and named["seed"] == 21 and named["prompt"] == "gold ring on marble"
    assert named["scheduler"] == "Euler" and named["mask_model"] == "u2netp"


@pytest.mark.slow
def test_browser_compare_tab_runs_a_2x2_sweep(browser, studio):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = open_studio(browser, studio[0])
    fill_inputs(page, "perfume bottle in a jungle")
    page.get_by_role("tab", name="Compare").click()
    page.locator("#x_values textarea, #x_values input").first.fill("0.3, 0.9")
    page.locator("#y_values textarea, #y_values input").first.fill("0.2, 0.6")
    page.locator("#compare_run").click()
    expect(page.locator("#compare_cells .thumbnail-item")).to_have_count(4, timeout=180_000)
    expect(page.locator("#compare_grid img").first).to_be_visible(timeout=30_000)
    expect(page.locator("#compare_summary")).to_contain_text("4 cells")
    page.screenshot(path=str(ARTIFACTS / "studio-compare.png"), full_page=True)


def test_a_preset_keeps_the_machines_mask_model_and_sets_its_own_fields():
    """The mask model is this machine's choice (it may have only one): choosing a preset leaves it alone."""
    import gradio as gr

    from pipeline.interfaces.studio.handlers import apply_preset
    from pipeline.interfaces.studio.screen import SETTING_INPUTS

    values = dict(zip(SETTING_INPUTS, apply_preset("jewelry", None)))
    assert values["mask_model"] == gr.skip()
    assert values["cn_weight"] == 1 and values["scheduler"] == "DPM++ 2M Karras"
    assert values["resolution"] == 0  # the box's "model's own"


@pytest.mark.slow
def test_framing_shadow_and_quality_through_the_studio(client, studio):
    """The finishing panels' fields reach the request by keyword, and the summary says what they did."""
    from gradio_client import handle_file

    gallery, _, intermediates, summary = client.predict(
        image=handle_file(str(ROOT / "assets" / "product-perfume.jpg")),
        ref_image=handle_file(str(ROOT / "assets" / "scene-jungle.jpg")),
        prompt="perfume on moss", scheduler="Euler", num_inference_steps=20, seed=5, mask_model="u2netp",
        resolution=64, canvas="256x320", padding=0.1, placement="bottom", shadow="soft", shadow_opacity=0.45,
        light_match=1, api_name="/generate",
    )
    assert "**Framing** canvas 256x320" in summary and "**Product colours adjusted**" in summary
    assert "**Quality, image 1**" in summary
    assert len(intermediates) == 4 and intermediates[3]["caption"] == "shadow and reflection, seed 5"
    assert len(gallery) == 1
    saved = max(studio[1].glob("*.json"), key=lambda path: path.stat().st_mtime)
    request = json.loads(saved.read_text())["request"]
    # soft's own opacity, left where the mode put it, is sent as "the mode's own" (null), as the CLI would
    assert request["canvas"] == "256x320" and request["shadow"] == "soft" and request["shadow_opacity"] is None
    assert request["light_match"] == 1


def test_the_framing_preview_shows_a_canvas_and_nothing_without_one(u2netp_home):
    from pipeline.interfaces.studio.handlers import preview_framing

    photo = str(ROOT / "assets" / "product-shoe.jpg")
    preview = preview_framing(photo, None, "u2netp", "web-banner", 0.075, "bottom")
    assert preview is not None and preview.size[0] > preview.size[1]  # the wide canvas's shape
    assert preview_framing(photo, None, "u2netp", "input", 0.0, "center") is None
    assert preview_framing(None, None, "u2netp", "2000x2000", 0.0, "center") is None


def test_a_canvas_being_typed_warns_once_and_shows_nothing(u2netp_home, monkeypatch):
    import gradio as gr

    from pipeline.interfaces.studio.handlers import preview_framing

    warned = []
    monkeypatch.setattr(gr, "Warning", warned.append)
    assert preview_framing(str(ROOT / "assets" / "product-shoe.jpg"), None, "u2netp", "12x", 0.0, "center") is None
    assert len(warned) == 1 and warned[0].startswith("Canvas (canvas): '12x'")


def test_shadow_knobs_left_at_their_modes_values_are_sent_as_the_modes_own():
    from pipeline.interfaces.studio.screen import from_screen, mode_knobs, settings_on_screen

    assert mode_knobs("soft") == {"shadow_opacity": 0.45, "shadow_softness": 0.6, "shadow_length": 0.5}
    sent = from_screen({"shadow": "soft", "shadow_opacity": 0.45, "shadow_softness": 0.2, "shadow_length": 0.5})
    assert (sent["shadow_opacity"], sent["shadow_softness"], sent["shadow_length"]) == (None, 0.2, None)
    # and back: a loaded request's nulls show the mode's own values
    assert settings_on_screen({"shadow": "hard", "shadow_opacity": None, "shadow_length": 1.2}) == ["hard", 0.6, 1.2]


def test_a_preset_with_a_shadow_shows_that_modes_knobs():
    from pipeline.interfaces.studio.handlers import apply_preset
    from pipeline.interfaces.studio.screen import SETTING_INPUTS

    values = dict(zip(SETTING_INPUTS, apply_preset("perfume-cosmetics", None)))
    assert values["shadow"] == "soft" and values["shadow_opacity"] == 0.45 and values["reflection"] > 0
