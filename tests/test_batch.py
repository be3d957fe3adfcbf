"""Catalogue batches as a studio runs them: ``python -m pipeline batch`` on a folder, resumed, hosted in parallel."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_segmind import FakeSegmind
from PIL import Image
from scenes import small_asset

ROOT = Path(__file__).resolve().parent.parent
# The tiny models paint random scenes, which u2netp sometimes reads as more product (a chair's gaps): these tests
# are about the catalogue's workflow, so the quality check never sends an item to review here (test_quality and
# the retry tests below test the check itself).
FAST = ["--scheduler", "Euler", "--num-inference-steps", "20", "--resolution", "64", "--mask-model", "u2netp",
        "--qa-max-expansion", "100"]


@pytest.fixture
def catalogue(tmp_path):
    """Four real product photos and one broken file."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("perfume", "shoe", "ring", "chair"):
        (folder / f"{name}.jpg").write_bytes(small_asset(f"product-{name}.jpg").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image: ignored")
    return folder


def batch(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "batch", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=os.environ | (env or {}), **kwargs)


def rows(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {Path(row["input"]).name: row for row in map(json.loads, lines)}


@pytest.mark.slow
def test_a_batch_records_each_item_and_a_rerun_skips_the_finished(u2netp_home, catalogue, tmp_path):
    out = tmp_path / "out"
    args = [str(catalogue), "--ref", str(ROOT / "assets" / "scene-wood.jpg"), "--prompt", "on a wooden deck",
            "--model-set", "tiny", *FAST, "--out", str(out)]
    first = batch(*args)
    assert first.returncode == 1, first.stderr  # one item failed
    assert "4 made, 0 skipped (already made), 1 failed" in first.stderr
    manifest = rows(out)
    assert sorted(manifest) == ["broken.png", "chair.jpg", "perfume.jpg", "ring.jpg", "shoe.jpg"]
    assert manifest["broken.png"]["status"] == "failed"
    assert manifest["broken.png"]["error"].startswith("image: not a readable image file")
    for name in ("chair.jpg", "perfume.jpg", "ring.jpg", "shoe.jpg"):
        row = manifest[name]
        assert row["status"] == "done" and len(row["seeds"]) == 1 and row["request"]["prompt"] == "on a wooden deck"
        assert Image.open(row["outputs"][0]).size == Image.open(catalogue / name).size
        assert row["timings"]["total"] > 0
    assert re.search(r"4 made, .* \(start-up [\d.]+ s, then [\d.]+ s per image\)", first.stderr), first.stderr
    second = batch(*args)
    assert "0 made, 4 skipped (already made), 1 failed" in second.stderr and "per image" not in second.stderr
    assert len(list(out.glob("*.jpg"))) == 4


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.slow
def test_an_interrupted_batch_resumes_to_completion(u2netp_home, catalogue, tmp_path):
    (catalogue / "broken.png").unlink()
    out = tmp_path / "out"
    args = [str(catalogue), "--ref", str(ROOT / "assets" / "scene-marble.jpg"), "--prompt", "on marble",
            "--model-set", "tiny", *FAST, "--out", str(out), "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "batch", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and '"done"' not in _text(out / "manifest.jsonl"):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # killed mid-way, no chance to tidy up
    process.wait()
    finished_before = sum(row["status"] == "done" for row in rows(out).values())
    assert 1 <= finished_before < 4
    for image in out.glob("*.jpg"):
        Image.open(image).load()  # every file with a final name is whole
    resumed = batch(*args[:-1])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{4 - finished_before} made, {finished_before} skipped" in resumed.stderr
    assert {row["status"] for row in rows(out).values()} == {"done"} and len(rows(out)) == 4
    assert len(list(out.glob("*.jpg"))) == 4 and not list(out.glob(".*.part"))
    started = time.monotonic()
    again = batch(*args[:-1])
    assert again.returncode == 0 and "0 made, 4 skipped (already made), 0 failed" in again.stderr
    assert time.monotonic() - started < 5  # nothing left to do: no torch import, no model load (~10 s)


@pytest.mark.slow
def test_hosted_batches_run_calls_concurrently(u2netp_home, catalogue, tmp_path):
    out = tmp_path / "out"
    with FakeSegmind(api_key="k") as service:
        service.delay = 0.5
        done = batch(str(catalogue), "--ref", str(ROOT / "assets" / "scene-jungle.jpg"), "--prompt", "in a jungle",
                     "--mask-model", "u2netp", "--backend", "hosted", "--jobs", "3", "--seed", "10",
                     "--out", str(out), env={"SEGMIND_API_URL": service.url, "SEGMIND_API_KEY": "k"})
        assert done.returncode == 1, done.stderr
        assert service.peak_in_flight >= 2 and len(service.requests) == 4
    manifest = rows(out)
    assert [manifest[name]["status"] for name in sorted(manifest)] == ["failed", "done", "done", "done", "done"]
    assert all(manifest[name]["seeds"] == [10] for name in manifest if name != "broken.png")
    assert len(list(out.glob("*.jpg"))) == 4


def test_batch_user_errors_exit_2_before_any_work(catalogue, tmp_path):
    no_ref = batch(str(catalogue), "--prompt", "x", "--out", str(tmp_path))
    assert no_ref.returncode == 2 and "ref_image: is required: give --ref" in no_ref.stderr
    empty = batch(str(tmp_path / "nothing-here" / "*.jpg"), "--ref", "r.jpg", "--prompt", "x", "--out", str(tmp_path))
    assert empty.returncode == 2 and "inputs: no product photos" in empty.stderr
    bad = batch(str(catalogue), "--ref", str(ROOT / "assets" / "scene-wood.jpg"), "--prompt", "x",
                "--cn-weight", "7", "--out", str(tmp_path))
    assert bad.returncode == 2 and "cn_weight: '7' is out of range" in bad.stderr
    preset = batch(str(catalogue), "--preset", "nope", "--prompt", "x", "--out", str(tmp_path))
    assert preset.returncode == 2 and "preset: 'nope' is unknown" in preset.stderr


def test_a_manifest_line_cut_short_by_a_crash_is_ignored(tmp_path):
    from pipeline.workflows.manifest import Manifest

    path = tmp_path / "manifest.jsonl"
    good = {"input": "/a.jpg", "status": "done", "outputs": []}
    path.write_text(json.dumps(good) + "\n" + '{"input": "/b.jpg", "sta')
    manifest = Manifest(path)
    assert manifest.is_done("/a.jpg") and not manifest.is_done("/b.jpg")
    assert path.read_text() == json.dumps(good) + "\n"  # compacted: the torn line is gone


def test_the_next_photo_is_masked_while_this_one_generates_and_never_twice():
    import threading

    from pipeline.workflows.batch import _run_in_turn

    events = []

    def look_ahead(path):
        time.sleep(0.1)  # slower than an item's work: without the wait, work would start first
        events.append(("ahead", path, threading.current_thread().name))  # on finishing
        if path == "c":
            raise RuntimeError("a look-ahead that fails changes nothing")

    def work(path):
        events.append(("work", path, threading.current_thread().name))
        return {"input": path}

    finished = []
    _run_in_turn(["a", "b", "c"], work, finished.append, look_ahead)
    assert [row["input"] for row in finished] == ["a", "b", "c"]
    assert [(kind, path) for kind, path, _ in events if kind == "ahead"] == [("ahead", "b"), ("ahead", "c")]
    assert all(name.startswith("backdrop-look-ahead") for kind, _, name in events if kind == "ahead")
    assert all(name == threading.current_thread().name for kind, _, name in events if kind == "work")
    order = [(kind, path) for kind, path, _ in events]
    for path in ("b", "c"):  # each item's look-ahead had finished before its own work began
        assert order.index(("ahead", path)) < order.index(("work", path))


@pytest.mark.slow
def test_a_batch_masks_each_photo_once_and_ahead_while_the_service_works(u2netp_home, catalogue, tmp_path,
                                                                           monkeypatch, mask_model_runs):
    from pipeline.interfaces.cli import batch as batch_command

    threads = mask_model_runs
    with FakeSegmind(api_key="k") as service:
        monkeypatch.setenv("SEGMIND_API_URL", service.url)
        monkeypatch.setenv("SEGMIND_API_KEY", "k")
        args = batch_command.build_parser().parse_args([
            str(catalogue), "--ref", str(ROOT / "assets" / "scene-wood.jpg"), "--prompt", "on a wooden deck",
            "--backend", "hosted", *FAST, "--out", str(tmp_path / "out"), "--quiet"])
        assert batch_command.run(args) == 1  # the broken file fails, as before
    assert len(threads) == 4  # four photos, four masks: none made twice
    # broken.png comes first (sorted), so every real photo is masked ahead, while the one before it ran.
    assert all(name.startswith("backdrop-look-ahead") for name in threads)


def test_masks_are_made_ahead_only_where_generation_leaves_the_cpu_free(monkeypatch):
    from types import SimpleNamespace

    from pipeline.backends.local import models
    from pipeline.workflows.batch import _generation_leaves_the_cpu_free

    local = SimpleNamespace(backend="local", device=None, dtype=None, memory_mode=None)
    monkeypatch.setattr(models, "resolve_runtime", lambda *a: SimpleNamespace(device="cpu"))
    assert not _generation_leaves_the_cpu_free(local)
    assert _generation_leaves_the_cpu_free(SimpleNamespace(backend="hosted"))
    monkeypatch.setattr(models, "resolve_runtime", lambda *a: SimpleNamespace(device="cuda"))
    assert _generation_leaves_the_cpu_free(local)


@pytest.mark.slow
def test_an_item_over_a_quality_threshold_is_retried_with_the_next_seeds_and_ends_review(u2netp_home, catalogue,
                                                                                        tmp_path):
    """A forced failure: a full light match always changes the product somewhat, so --qa-max-product-change 0
    sends every try to review (a figure a new seed can change: each background asks its own light match, so it
    is retried). Every try is recorded, the item ends 'review' with its best try's images, and a rerun resumes."""
    (catalogue / "broken.png").unlink()
    for name in ("shoe", "ring", "chair"):
        (catalogue / f"{name}.jpg").unlink()
    out = tmp_path / "out"
    args = [str(catalogue), "--ref", str(ROOT / "assets" / "scene-wood.jpg"), "--prompt", "on a wooden deck",
            "--model-set", "tiny", *FAST, "--seed", "40", "--light-match", "1", "--qa-max-product-change", "0",
            "--qa-retries", "1",
            "--out", str(out)]
    first = batch(*args)
    assert first.returncode == 0, first.stderr  # to review is not failed
    assert "1 made, 0 skipped (already made), 0 failed, 1 to review" in first.stderr
    row = rows(out)["perfume.jpg"]
    assert row["status"] == "review" and [t["seeds"] for t in row["tries"]] == [[40], [41]]
    assert all(t["verdicts"] == ["review"] for t in row["tries"]) and sum(t["kept"] for t in row["tries"]) == 1
    kept = next(t for t in row["tries"] if t["kept"])
    assert row["seeds"] == kept["seeds"] and row["quality"] == kept["quality"]
    assert row["quality"][0]["over"] == ["product_change"]
    assert [Path(p).name for p in row["outputs"]] == [f"perfume_{kept['seeds'][0]}.jpg"]
    assert len(list(out.glob("*.jpg"))) == 1  # only the kept try is written
    again = batch(*args)
    assert again.returncode == 0 and "0 made, 1 skipped (already made), 0 failed, 1 to review" in again.stderr


def test_the_first_try_that_passes_is_kept_and_retries_stop_there():
    from pipeline.contract.result import BgReplaceResult
    from pipeline.workflows.retries import make_with_retries

    verdicts = {7: "review", 8: "ok"}
    made = []

    def make(request):
        made.append(request.seed)
        verdict = verdicts.get(request.seed, "review")
        quality = {"verdict": verdict, "expansion": 0.2, "over": ["expansion"] if verdict == "review" else []}
        return BgReplaceResult(images=(), seeds=(request.seed,), request=request, timings={},
                               info={"quality": [quality]})

    request = _tiny_request(seed=7)
    tries = make_with_retries(make, request, retries=3)
    assert made == [7, 8] and tries.status == "done" and tries.best.seeds == (8,)
    assert [(t["seeds"], t["kept"]) for t in tries.record] == [([7], False), ([8], True)]
    none_pass = make_with_retries(make, _tiny_request(seed=20), retries=1)
    assert none_pass.status == "review" and len(none_pass.record) == 2
    assert make_with_retries(make, _tiny_request(seed=20), retries=0).record[0]["kept"]


def test_an_image_over_only_on_the_photos_own_figures_is_not_made_again():
    """mask_uncertainty and upscale are the photo's: another seed cannot change them, so an image over on one of
    them (alone or with a figure a seed changes) stays review whatever the seed, and no GPU time is spent."""
    from pipeline.contract.result import BgReplaceResult
    from pipeline.workflows.retries import make_with_retries

    made = []

    def make(request):
        made.append(request.seed)
        over = {7: ["mask_uncertainty", "upscale"], 8: ["mask_uncertainty", "expansion"]}.get(request.seed,
                                                                                           ["expansion"])
        return BgReplaceResult(images=(), seeds=(request.seed,), request=request, timings={},
                               info={"quality": [{"verdict": "review", "expansion": 0.0, "over": over}]})

    for seed in (7, 8):
        tries = make_with_retries(make, _tiny_request(seed=seed), retries=3)
        assert made == [seed] and tries.status == "review" and len(tries.record) == 1
        made.clear()
    tries = make_with_retries(make, _tiny_request(seed=9), retries=2)
    assert made == [9, 10, 11] and tries.status == "review"  # only expansion over: each retry might have passed


def test_the_kept_try_is_the_one_nearest_to_passing_on_product_change_too():
    from pipeline.contract.result import BgReplaceResult
    from pipeline.workflows.retries import make_with_retries

    changes = {3: 0.2, 4: 0.12, 5: 0.3}

    def make(request):
        quality = {"verdict": "review", "expansion": 0.0, "product_change": changes[request.seed],
                   "over": ["product_change"]}
        return BgReplaceResult(images=(), seeds=(request.seed,), request=request, timings={},
                               info={"quality": [quality]})

    tries = make_with_retries(make, _tiny_request(seed=3), retries=2)
    assert tries.best.seeds == (4,) and [t["kept"] for t in tries.record] == [False, True, False]


def _tiny_request(**fields):
    from pipeline import BgReplaceRequest

    image = Image.new("RGB", (64, 64), "white")
    return BgReplaceRequest(image=image, ref_image=image, prompt="a test", **fields)
