"""Finding the product (real u2netp model), shaping the masks, and the canny map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scenes import iou, perfume_bottle

from pipeline import BackdropError
from pipeline.stages.edges import subject_canny
from pipeline.stages.masking import inpaint_mask, mask_session, refine_alpha, subject_alpha


def test_u2netp_finds_the_rendered_bottle(u2netp_home, bottle):
    photo, truth = bottle
    alpha, source = subject_alpha(photo, mask_model="u2netp")
    assert source == "u2netp" and alpha.size == photo.size
    assert iou(alpha, truth) >= 0.95


@pytest.mark.slow
def test_mask_works_on_large_photos_at_full_size(u2netp_home):
    photo, truth = (image.resize((2400, 1600), Image.Resampling.LANCZOS) for image in perfume_bottle(1200, 800))
    alpha, _ = subject_alpha(photo, mask_model="u2netp")
    assert alpha.size == (2400, 1600)
    assert iou(alpha, truth) >= 0.95


def test_the_same_photo_again_reuses_its_mask_and_any_change_is_a_new_one(u2netp_home, bottle, mask_model_runs):
    from pipeline.stages import masking

    runs = mask_model_runs
    photo, _ = bottle
    first, _ = subject_alpha(photo, mask_model="u2netp")
    again, _ = subject_alpha(photo.copy(), mask_model="u2netp")  # equal pixels, another object
    assert len(runs) == 1 and np.array_equal(np.asarray(first), np.asarray(again))
    edited = photo.copy()
    edited.putpixel((3, 3), (0, 0, 0))
    subject_alpha(edited, mask_model="u2netp")
    assert len(runs) == 2
    masking.clear_mask_cache()
    cleared, _ = subject_alpha(photo, mask_model="u2netp")
    assert len(runs) == 3 and np.array_equal(np.asarray(first), np.asarray(cleared))  # a hit is what a run gives


def test_the_mask_cache_keeps_only_the_most_recent_photos(u2netp_home, monkeypatch):
    import rembg

    from pipeline.stages import masking

    masking.clear_mask_cache()
    monkeypatch.setattr(masking, "MASK_CACHE_ENTRIES", 2)
    runs = []
    monkeypatch.setattr(rembg, "remove", lambda image, **k: runs.append(1) or Image.new("L", image.size, 255))
    monkeypatch.setattr(masking, "mask_session", lambda name: name)  # no model file needed: remove is faked
    photos = [Image.new("RGB", (64, 64), (shade, 0, 0)) for shade in (10, 20, 30)]
    for photo in (*photos, photos[2], photos[0]):  # the third photo pushes the first out
        subject_alpha(photo, mask_model="u2netp")
    assert len(runs) == 4 and len(masking._mask_cache) == 2
    subject_alpha(photos[0], mask_model="silueta")  # another model is another mask
    assert len(runs) == 5
    masking.clear_mask_cache()


def test_sessions_are_created_once_per_model(u2netp_home):
    assert mask_session("u2netp") is mask_session("u2netp")


def test_the_half_pixel_rewrite_of_u2netp_gives_the_stock_models_answer(u2netp_home, bottle):
    import onnx
    import onnxruntime

    from pipeline.stages.masking import half_pixel_model

    stock_path = u2netp_home / "u2netp.onnx"
    rewritten = half_pixel_model(stock_path)
    modes = [attribute.s for node in onnx.load_from_string(rewritten).graph.node if node.op_type == "Resize"
             for attribute in node.attribute if attribute.name == "coordinate_transformation_mode"]
    assert len(modes) == 38 and set(modes) == {b"half_pixel"}

    session = mask_session("u2netp")
    stock = onnxruntime.InferenceSession(str(stock_path), providers=["CPUExecutionProvider"])
    photo = bottle[0].resize((320, 320))
    inputs = session.normalize(photo, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320))
    ours, theirs = session.inner_session.run(None, inputs), stock.run(None, inputs)
    assert len(ours) == len(theirs) == 7
    for mine, reference in zip(ours, theirs):
        assert np.abs(mine - reference).max() < 1e-4


def test_a_new_u2net_family_session_runs_on_the_rewrite(u2netp_home, monkeypatch):
    from pipeline.stages import masking

    rewrites = []
    real = masking.half_pixel_model
    monkeypatch.setattr(masking, "half_pixel_model", lambda path: rewrites.append(path) or real(path))
    monkeypatch.setattr(masking, "_sessions", {})
    session = mask_session("u2netp")
    assert [Path(path).name for path in rewrites] == ["u2netp.onnx"]
    assert session.predict(Image.new("RGB", (320, 320), "white"))[0].size == (320, 320)


def test_a_model_the_rewrite_cannot_read_keeps_rembgs_own_session(u2netp_home, monkeypatch, caplog):
    from pipeline.stages import masking

    def unreadable(path):
        raise ValueError("not an ONNX model")

    monkeypatch.setattr(masking, "half_pixel_model", unreadable)
    monkeypatch.setattr(masking, "_sessions", {})
    session = mask_session("u2netp")
    assert "kept rembg's own u2netp session (ValueError: not an ONNX model)" in caplog.text
    assert session.predict(Image.new("RGB", (320, 320), "white"))[0].size == (320, 320)


def test_unknown_mask_model_lists_the_allowed():
    with pytest.raises(BackdropError, match="^mask_model: 'sam' is unknown; expected one of birefnet-general-lite"):
        mask_session("sam")


def test_a_model_that_cannot_be_fetched_says_how_to_fix_it(monkeypatch, tmp_path):
    from pipeline import ModelLoadError

    monkeypatch.setenv("U2NET_HOME", str(tmp_path))  # empty: rembg would have to download (no network here)
    monkeypatch.setattr("pipeline.stages.masking._sessions", {})
    with pytest.raises(ModelLoadError, match="mask model 'silueta' could not be loaded .*silueta.onnx") as caught:
        mask_session("silueta")
    # Offline, the reason is said in words, not as a chain of URLs and retries cut off mid-word.
    assert "could not be loaded (the download failed: no network connection)" in str(caught.value)


def test_user_mask_overrides_the_model(bottle):
    photo, truth = bottle
    alpha, source = subject_alpha(photo, mask_model="u2netp", user_mask=truth)
    assert source == "user mask" and np.array_equal(np.asarray(alpha), np.asarray(truth))


def test_user_mask_is_resized_when_it_has_the_images_shape_and_refused_otherwise(bottle):
    photo, truth = bottle
    alpha, _ = subject_alpha(photo, mask_model="u2netp", user_mask=truth.resize((256, 256)))
    assert alpha.size == photo.size and iou(alpha, truth) > 0.97
    with pytest.raises(BackdropError, match=r"^mask: 256x128 does not have the image's shape \(512x512\)"):
        subject_alpha(photo, mask_model="u2netp", user_mask=truth.resize((256, 128)))


def test_cutout_png_uses_its_own_transparency(bottle):
    photo, truth = bottle
    cutout = photo.convert("RGBA")
    cutout.putalpha(truth)
    alpha, source = subject_alpha(cutout, mask_model="u2netp")
    assert source == "image transparency" and np.array_equal(np.asarray(alpha), np.asarray(truth))


def test_grow_shrink_and_feather(bottle):
    truth = bottle[1]
    area = (np.asarray(truth) >= 128).sum()
    grown = (np.asarray(refine_alpha(truth, grow=8)) >= 128).sum()
    shrunk = (np.asarray(refine_alpha(truth, grow=-8)) >= 128).sum()
    assert shrunk < area < grown
    soft = np.asarray(refine_alpha(truth, feather=10))
    hard = np.asarray(truth)
    assert ((soft > 0) & (soft < 255)).sum() > 3 * ((hard > 0) & (hard < 255)).sum()
    with pytest.raises(BackdropError, match="^mask_grow: shrinks the product away entirely"):
        refine_alpha(Image.fromarray(np.pad(np.full((6, 6), 255, np.uint8), 47)), grow=-10)


def test_inpaint_mask_is_the_background_reaching_into_the_soft_edge(bottle):
    truth = np.asarray(bottle[1])
    mask = np.asarray(inpaint_mask(bottle[1], halo=3))
    assert set(np.unique(mask)) <= {0, 255}
    assert (mask[truth == 0] == 255).all()  # all background is regenerated
    assert (mask[(truth > 0) & (truth < 255)] == 255).all()  # so is every soft edge pixel: no old halo
    kept = mask == 0
    assert kept.sum() > 0.8 * (truth == 255).sum()  # but the product itself is kept
    assert (truth[kept] == 255).all()


def test_canny_sees_the_product_and_not_the_old_background(bottle):
    photo, truth = bottle
    busy = np.asarray(photo).copy()
    stripes = (np.arange(busy.shape[1]) // 8 % 2 * 120).astype(np.uint8)
    background = np.asarray(truth) == 0
    busy[background] = np.stack([stripes] * 3, axis=-1)[np.nonzero(background)[1]]
    edges = np.asarray(subject_canny(Image.fromarray(busy), truth))
    assert edges.shape == (*truth.size[::-1], 3)
    far_from_product = np.asarray(refine_alpha(truth, grow=6)) == 0
    assert edges[far_from_product].max() == 0  # the striped backdrop left no edge
    assert edges[np.asarray(truth) > 0].max() == 255  # the product (label, cap, silhouette) did


def test_canny_thresholds_matter(bottle):
    photo, truth = bottle
    faint = np.asarray(photo).astype(np.int16)
    faint[:, ::6] -= 12  # subtle texture on the product: only a loose threshold sees it
    textured = Image.fromarray(np.clip(faint, 0, 255).astype(np.uint8))
    loose = (np.asarray(subject_canny(textured, truth, low=5, high=20)) > 0).sum()
    strict = (np.asarray(subject_canny(textured, truth, low=100, high=200)) > 0).sum()
    assert loose > 2 * strict
