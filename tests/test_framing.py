"""Framing: the product placed on a canvas by padding and placement, the same on every path a request takes."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from render import gold_ring, running_shoe, wooden_chair
from scenes import perfume_bottle, reference_scene, small_asset

from pipeline import BackdropError, BgReplaceRequest
from pipeline.contract.canvases import NAMED_CANVASES
from pipeline.stages.framing import enlargement_warning, framing_preview
from pipeline.stages.prepare import compose_output, prepare_inputs

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = reference_scene("jungle", 256, 256)
HORIZONTAL = {"left": 0.0, "right": 1.0}
VERTICAL = {"top": 0.0, "bottom": 1.0}


def framed(photo, alpha, **fields):
    request = BgReplaceRequest(image=photo, ref_image=REFERENCE, prompt="on a table", mask=alpha, seed=1,
                               resolution=96, **fields)
    prepared = prepare_inputs(request, 1024)
    output = compose_output(request, prepared, reference_scene("wood", *prepared.size))
    return request, prepared, output


def bounds(alpha) -> tuple[int, int, int, int]:
    """left, top, right, bottom (exclusive) of every pixel the product covers, by the test's own reckoning
    (refine_alpha clears alpha at or below 5, mask-model noise)."""
    ys, xs = np.nonzero(np.asarray(alpha) > 5)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def expected_box(source, canvas, padding, placement):
    """Where padding and placement say the product goes (left, top, right, bottom), as floats."""
    left, top, right, bottom = source
    width, height = canvas
    room_w, room_h = width * (1 - 2 * padding), height * (1 - 2 * padding)
    scale = min(room_w / (right - left), room_h / (bottom - top))
    placed_w, placed_h = (right - left) * scale, (bottom - top) * scale
    words = placement.split("-")
    fx = next((HORIZONTAL[w] for w in words if w in HORIZONTAL), 0.5)
    fy = next((VERTICAL[w] for w in words if w in VERTICAL), 0.5)
    x, y = width * padding + (room_w - placed_w) * fx, height * padding + (room_h - placed_h) * fy
    return x, y, x + placed_w, y + placed_h


def assert_solid_pixels_are_the_original_resampled(photo, alpha, output, box, placed_alpha):
    """The output's solid product equals the photo's product box resampled to ``box`` (mean within a level)."""
    left, top, right, bottom = bounds(alpha)
    x, y, width, height = box
    crop = np.asarray(photo)[top:bottom, left:right]
    shrinking = width * height < crop.shape[0] * crop.shape[1]
    resampled = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    solid = np.asarray(placed_alpha)[y:y + height, x:x + width] == 255
    shown = np.asarray(output)[y:y + height, x:x + width]
    assert solid.sum() > 100
    assert np.abs(shown[solid].astype(int) - resampled[solid].astype(int)).mean() <= 1.0


PRODUCTS = {  # rendered once each (drawing at 4x supersampling takes seconds)
    "tall bottle": lambda: perfume_bottle(600, 900),
    "wide shoe": lambda: running_shoe(900, 600),
    "square ring": lambda: gold_ring(500, 500),
    "big chair": lambda: wooden_chair(480, 600),
}


@functools.cache
def rendered(product: str):
    return PRODUCTS[product]()


@pytest.mark.parametrize(("product", "canvas", "padding", "placement"), [
    ("tall bottle", "1500x500", 0.05, "center"),  # a tall product on a wide canvas
    ("wide shoe", "500x1500", 0.1, "bottom"),  # a wide product on a tall one
    ("square ring", "2000x2000", 0.075, "top-right"),
    ("big chair", "240x300", 0.0, "left"),  # shrunk: area averaging
    ("wide shoe", "1920x1080", 0.2, "bottom-left"),
    ("tall bottle", "800x1000", 0.45, "right"),
])
def test_the_product_lands_where_padding_and_placement_say(product, canvas, padding, placement):
    photo, alpha = rendered(product)
    _, prepared, output = framed(photo, alpha, canvas=canvas, padding=padding, placement=placement)
    size = tuple(int(side) for side in canvas.split("x"))
    assert output.size == size and prepared.alpha.size == size
    want = expected_box(bounds(alpha), size, padding, placement)
    got = bounds(prepared.alpha)
    assert all(abs(g - w) <= 1 for g, w in zip(got, want)), (got, want)
    assert_solid_pixels_are_the_original_resampled(photo, alpha, output, prepared.placement.box, prepared.alpha)


def test_generation_is_about_a_megapixel_in_the_canvas_shape(bottle):
    request = BgReplaceRequest(image=bottle[0], ref_image=REFERENCE, prompt="x", mask=bottle[1], canvas="1920x1080")
    prepared = prepare_inputs(request, 1024)
    width, height = prepared.size
    assert 0.9e6 < width * height < 1.15e6 and abs(width / height - 16 / 9) < 0.03
    assert prepared.inpaint_mask.size == prepared.canny.size == prepared.size
    # the inpaint mask is the placed product's: it keeps (black) only where the placed product is solid
    kept = np.asarray(prepared.inpaint_mask) == 0
    assert kept.any() and (np.asarray(prepared.alpha_small)[kept] >= 250).all()


def test_sides_cut_by_the_photos_frame_snap_to_the_canvas_edge(bottle):
    photo, alpha = bottle  # 512x512, the bottle's bottom cut off by the frame:
    cut_photo, cut_alpha = photo.crop((0, 0, 512, 400)), alpha.crop((0, 0, 512, 400))
    _, prepared, _ = framed(cut_photo, cut_alpha, canvas="1000x1000", padding=0.1, placement="top")
    left, top, right, bottom = bounds(prepared.alpha)
    assert bottom == 1000  # on the edge, not floating 100 px above it
    assert top >= 99 and left >= 99 and right <= 901
    assert prepared.placement.cut == (False, False, False, True)

    shoe, shoe_alpha = running_shoe(900, 600)
    left_edge, _, right_edge, _ = bounds(shoe_alpha)
    middle = (left_edge + 60, 0, right_edge - 60, 600)  # a product cropped on both sides, like a long sofa
    _, prepared, _ = framed(shoe.crop(middle), shoe_alpha.crop(middle), canvas="1000x1000", padding=0.1,
                            placement="bottom")
    left, top, right, bottom = bounds(prepared.alpha)
    assert (left, right) == (0, 1000) and bottom <= 901
    assert abs(bottom - 900) <= 1  # standing on the lower margin, as placement says


@pytest.mark.parametrize("name", sorted(NAMED_CANVASES))
def test_every_named_size_works(name, bottle):
    named = NAMED_CANVASES[name]
    request, prepared, output = framed(*bottle, canvas=name, padding=0.05, placement="bottom")
    assert request.canvas == name and output.size == (named.width, named.height)
    want = expected_box(bounds(bottle[1]), output.size, 0.05, "bottom")
    assert all(abs(g - w) <= 1 for g, w in zip(bounds(prepared.alpha), want))


def test_users_name_their_own_sizes_in_a_json_file(bottle, tmp_path, monkeypatch):
    sizes = tmp_path / "canvases.json"
    sizes.write_text(json.dumps({"My-Shop": "1600x1200"}))
    monkeypatch.setenv("BACKDROP_CANVASES", str(sizes))
    request, _, output = framed(*bottle, canvas="my-shop")
    assert request.canvas == "my-shop" and output.size == (1600, 1200)
    sizes.write_text(json.dumps({"tiny": "10x10"}))
    with pytest.raises(BackdropError, match=r"^BACKDROP_CANVASES: .*'tiny': 10x10 is out of range"):
        BgReplaceRequest(image=bottle[0], ref_image=REFERENCE, prompt="x", canvas="tiny")


@pytest.mark.parametrize(("fields", "message"), [
    ({"canvas": "12x"}, "canvas: '12x' is not a canvas; expected 'input', WIDTHxHEIGHT (each side 64..8192"),
    ({"canvas": "0x100"}, "canvas: 0x100 is out of range; each side must be 64..8192 pixels"),
    ({"canvas": "abc"}, "canvas: 'abc' is not a canvas; expected 'input', WIDTHxHEIGHT"),
    ({"canvas": "8192x8000"}, "canvas: 8192x8000 is 65,536,000 pixels, over the limit of 64,000,000"),
    ({"canvas": 2000}, "canvas: 2000 is a int, not a size or a name"),
    ({"canvas": "2000x2000", "padding": 0.6}, "padding: 0.6 is out of range; expected a number from 0 to 0.45"),
    ({"canvas": "2000x2000", "placement": "middle"}, "placement: 'middle' is unknown; expected one of 'center'"),
    ({"padding": 0.1}, "padding: 0.1 needs a canvas, and canvas is 'input'"),
    ({"placement": "bottom"}, "placement: 'bottom' needs a canvas, and canvas is 'input'"),
])
def test_each_bad_framing_value_is_refused_naming_its_field(bottle, fields, message):
    with pytest.raises(BackdropError) as caught:
        BgReplaceRequest(image=bottle[0], ref_image=REFERENCE, prompt="x", **fields)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_size_over_the_pixel_limit_is_refused(bottle, monkeypatch):
    monkeypatch.setenv("BACKDROP_MAX_PIXELS", "4000000")
    with pytest.raises(BackdropError, match=r"^canvas: 2500x2000 is 5,000,000 pixels, over the limit of 4,000,000"):
        BgReplaceRequest(image=bottle[0], ref_image=REFERENCE, prompt="x", canvas="2500x2000")


def test_an_empty_mask_is_refused_naming_it(bottle):
    empty = Image.new("L", bottle[0].size, 0)
    request = BgReplaceRequest(image=bottle[0], ref_image=REFERENCE, prompt="x", mask=empty, canvas="1000x1000")
    with pytest.raises(BackdropError, match=r"^mask: the mask is empty: no pixel of it marks the product"):
        prepare_inputs(request, 1024)


def test_enlargement_is_recorded_and_warned(tiny_models, make_request, bottle):
    from pipeline import generate

    result = generate(make_request(canvas="2000x2000", padding=0.075, placement="bottom"), models=tiny_models)
    info = result.info
    assert result.images[0].size == (2000, 2000) and info["canvas_size"] == [2000, 2000]
    left, top, width, height = info["product_box"]
    assert abs(top + height - 1850) <= 1 and left >= 150 - 1 and left + width <= 1850 + 1
    assert info["enlarged"] == round(info["scale"], 2) > 1
    assert enlargement_warning(info) == (f"the product is enlarged {info['scale']:.1f}x: use a larger photo "
                                         "for a sharper product")
    shrunk = generate(make_request(canvas="256x256", samples=1), models=tiny_models)
    assert shrunk.info["scale"] < 1 and "enlarged" not in shrunk.info and enlargement_warning(shrunk.info) is None
    assert_solid_pixels_are_the_original_resampled(bottle[0], bottle[1], result.images[0], tuple(info["product_box"]),
                                                   result.intermediates.subject_alpha)


def test_output_size_generation_records_the_box_in_output_pixels(bottle):
    _, prepared, output = framed(*bottle, canvas="2000x1000", padding=0.1, output_size="generation")
    from pipeline.stages.framing import framing_info

    box = framing_info(prepared.placement, output.size)["product_box"]
    assert output.size == prepared.size
    left, top, right, bottom = bounds(prepared.alpha_small)
    assert abs(left - box[0]) <= 1 and abs(top - box[1]) <= 1
    assert abs(right - box[0] - box[2]) <= 1 and abs(bottom - box[1] - box[3]) <= 1


# Prepared inputs and the composited output of canvas=input requests, hashed before framing existed: the
# default request must make the very same pixels.
BEFORE_FRAMING = [((512, 512), {}, "3820ce2418af8a8e"),
                  ((900, 600), {"output_size": "generation"}, "f38e8093516d88de"),
                  ((600, 900), {"mask_feather": 3}, "98684c4cf2e59398")]


@pytest.mark.parametrize(("size", "fields", "digest"), BEFORE_FRAMING)
def test_the_default_canvas_makes_the_same_bytes_as_before_framing(size, fields, digest):
    photo, alpha = perfume_bottle(*size)
    request = BgReplaceRequest(image=photo, ref_image=REFERENCE, prompt="p", mask=alpha, seed=1, resolution=96,
                               **fields)
    assert (request.canvas, request.padding, request.placement) == ("input", 0.0, "center")
    prepared = prepare_inputs(request, 1024)
    output = compose_output(request, prepared, reference_scene("jungle", *prepared.size))
    hashed = hashlib.sha256()
    for image in (prepared.image, prepared.alpha_small, prepared.inpaint_mask, prepared.canny, output):
        hashed.update(repr((image.mode, image.size)).encode())
        hashed.update(image.tobytes())
    assert hashed.hexdigest()[:16] == digest
    assert prepared.placement is None


def test_the_preview_shows_the_product_on_a_checkerboard_with_the_padded_box(bottle):
    preview = framing_preview(bottle[0], bottle[1], "u2netp", "2000x1000", 0.1, "bottom", side=400)
    assert preview.size == (400, 200)
    pixels = np.asarray(preview).astype(int)
    assert tuple(pixels[20, 40]) == (230, 40, 120)  # the padded box's top-left corner, 10% in
    assert {tuple(pixels[2, 2]), tuple(pixels[2, 18])} == {(236, 236, 236), (204, 204, 204)}  # checkerboard
    grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
    outline = (pixels == (230, 40, 120)).all(axis=2)
    ys, xs = np.nonzero(~grey & ~outline)  # the amber bottle: neither checkerboard nor box
    assert abs(ys.max() + 1 - 180) <= 1 and abs((xs.min() + xs.max() + 1) / 2 - 200) <= 1  # on the lower margin
    assert ys.min() >= 19
    whole = framing_preview(bottle[0], bottle[1], "u2netp", "input", side=256)
    assert whole.size == (256, 256)
    with pytest.raises(BackdropError, match="^mask: the mask is empty"):
        framing_preview(bottle[0], Image.new("L", bottle[0].size), "u2netp", "2000x1000")


def test_hosted_places_the_product_as_the_local_backend_does(tiny_models, make_request):
    from fake_segmind import FakeSegmind

    from pipeline import generate
    from pipeline.backends.hosted import HostedSettings, generate_hosted

    request = make_request(canvas="1200x800", padding=0.1, placement="bottom-left")
    local = generate(request, models=tiny_models)
    with FakeSegmind(api_key="k") as service:
        hosted = generate_hosted(request, settings=HostedSettings(url=service.url, api_key="k", timeout=5.0))
        sent = Image.open(__import__("io").BytesIO(__import__("base64").b64decode(
            json.loads(service.requests[0]["body"])["image"])))
    assert hosted.images[0].size == local.images[0].size == (1200, 800)
    assert abs(sent.width / sent.height - 1.5) < 0.05  # the placed product on the new canvas is what is sent
    for key in ("product_box", "scale", "canvas_size", "enlarged"):
        assert hosted.info[key] == local.info[key]
    assert hosted.intermediates.subject_alpha.tobytes() == local.intermediates.subject_alpha.tobytes()
    solid = np.asarray(local.intermediates.subject_alpha) == 255
    assert (np.asarray(hosted.images[0])[solid] == np.asarray(local.images[0])[solid]).all()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=os.environ | (env or {}))


FAST = ["--model-set", "tiny", "--scheduler", "Euler", "--num-inference-steps", "20", "--resolution", "64",
        "--mask-model", "u2netp"]


@pytest.mark.slow
def test_the_cli_frames_and_records_the_box_in_the_sidecar_and_the_image(u2netp_home, tmp_path):
    from pipeline.workflows.metadata import read_metadata

    photo = tmp_path / "bottle.png"
    perfume_bottle(600, 900)[0].save(photo)
    done = cli("--image", str(photo), "--ref", str(small_asset("scene-wood.jpg")), "--prompt", "on oak", *FAST,
               "--canvas", "2000x2000", "--padding", "0.075", "--placement", "bottom", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    (path,) = [Path(line) for line in done.stdout.split()]
    assert Image.open(path).size == (2000, 2000)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    embedded = read_metadata(path)
    for data in (sidecar, embedded):
        assert data["request"].items() >= {"canvas": "2000x2000", "padding": 0.075, "placement": "bottom"}.items()
        left, top, width, height = data["info"]["product_box"]
        assert abs(top + height - 1850) <= 1 and abs(left + width / 2 - 1000) <= 1 and height > 1600
        assert data["info"]["scale"] > 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--canvas", "12x"], "canvas: '12x' is not a canvas"),
    (["--canvas", "0x100"], "canvas: 0x100 is out of range"),
    (["--canvas", "abc"], "canvas: 'abc' is not a canvas"),
    (["--canvas", "9000x9000"], "canvas: 9000x9000 is out of range"),
    (["--canvas", "2000x2000", "--padding", "0.6"], "padding: '0.6' is out of range"),
    (["--canvas", "2000x2000", "--placement", "middle"], "placement: 'middle' is unknown"),
    (["--padding", "0.1"], "padding: 0.1 needs a canvas"),
])
def test_cli_framing_mistakes_exit_2_naming_the_field(tmp_path, flags, message):
    photo = tmp_path / "bottle.png"
    perfume_bottle(200, 300)[0].save(photo)
    done = cli("--image", str(photo), "--ref", str(photo), "--prompt", "x", "--model-set", "tiny", *flags,
               "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.slow
def test_a_preset_frames_a_whole_batch_into_the_same_box(u2netp_home, tmp_path):
    """A catalogue with a preset that sets the framing: every product stands on the same lower margin,
    each exactly where the local backend puts it for that photo."""
    from pipeline.stages.masking import subject_alpha

    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("perfume", "shoe", "ring"):
        (shots / f"{name}.jpg").write_bytes(small_asset(f"product-{name}.jpg").read_bytes())
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "marketplace.json").write_text(json.dumps(
        {"name": "Marketplace", "canvas": "marketplace-square", "padding": 0.075, "placement": "bottom"}))
    out = tmp_path / "out"
    # The small test photos are enlarged past 2x onto the 2000 px canvas, which the quality check rightly sends
    # to review (test_quality tests that); this test is about where the products land.
    done = cli("batch", str(shots), "--ref", str(small_asset("scene-wood.jpg")), "--prompt", "on a wooden deck",
               "--preset", "marketplace", *FAST, "--qa-max-upscale", "100", "--out", str(out),
               env={"BACKDROP_PRESETS_DIR": str(presets)})
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == "done" and Image.open(row["outputs"][0]).size == (2000, 2000)
        photo = Image.open(shots / Path(row["input"]).name)
        alpha, _ = subject_alpha(photo.convert("RGB"), mask_model="u2netp")
        request = BgReplaceRequest(image=photo.convert("RGB"), ref_image=REFERENCE, prompt="x", mask=alpha,
                                   canvas="marketplace-square", padding=0.075, placement="bottom", resolution=64)
        local = prepare_inputs(request, 1024).placement
        assert row["product_box"] == list(local.visible_box) and row["scale"] == round(local.scale, 4)
        left, top, width, height = row["product_box"]
        if not any(local.cut):
            assert top + height == 1850 and left >= 150 and left + width <= 1850


@pytest.mark.slow
def test_a_rest_body_sets_the_framing(u2netp_home, tiny_models):
    import base64

    from fastapi.testclient import TestClient

    from pipeline.interfaces.rest import create_rest_app
    from pipeline.workflows.queue import GenerationQueue

    client = TestClient(create_rest_app(model_set="tiny", queue=GenerationQueue()))
    product = base64.b64encode(small_asset("product-perfume.jpg").read_bytes()).decode()
    body = {"image": product, "ref_image": product, "prompt": "on marble", "seed": 3, "scheduler": "Euler",
            "num_inference_steps": 20, "resolution": 64, "mask_model": "u2netp",
            "canvas": "1080x1350", "padding": 0.075, "placement": "bottom", "output_format": "png"}
    reply = client.post("/bg-replace", json=body)
    assert reply.status_code == 200, reply.text
    assert Image.open(__import__("io").BytesIO(reply.content)).size == (1080, 1350)
    for changes, message in [({"canvas": "abc"}, "canvas: 'abc' is not a canvas"),
                             ({"padding": 0.6}, "padding: 0.6 is out of range"),
                             ({"canvas": "input"}, "padding: 0.075 needs a canvas")]:
        refused = client.post("/bg-replace", json=body | changes)
        assert refused.status_code == 400 and refused.json()["error"].startswith(message), refused.text
        assert refused.json()["field"] == message.split(":")[0]


def test_placement_is_a_compare_axis(tiny_models, make_request):
    from functools import partial

    from pipeline import generate
    from pipeline.workflows.sweep import parse_axis_values, run_grid

    values = parse_axis_values("placement", "bottom, top")
    assert values == ["bottom", "top"]
    comparison = run_grid(make_request(canvas="400x600", padding=0.1), partial(generate, models=tiny_models),
                          "placement", values)
    bottom, top = (cell.result.info["product_box"] for cell in comparison.cells)
    assert bottom[1] + bottom[3] == 540 and top[1] == 60
    assert comparison.reuse_counts["prepare"] == 2  # each placement is its own preparation
    assert parse_axis_values("canvas", "2000x2000, story") == ["2000x2000", "story"]


def test_the_readme_lists_every_named_size_as_shipped():
    readme = (ROOT / "README.md").read_text()
    for name, canvas in NAMED_CANVASES.items():
        assert f"| `{name}` | {canvas.width}x{canvas.height} |" in readme
    assert (ROOT / "docs" / "framing.png").is_file() and "](docs/framing.png)" in readme
