"""Issue 18: catalogue runs that never lose, repeat or silently skip work, and per-item settings (--items).

The batch runs in-process against the fake hosted service (the real u2netp mask model, no diffusion), so
each run takes a second or two.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fake_segmind import FakeSegmind
from scenes import small_asset

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "assets" / "scene-wood.jpg"


@pytest.fixture
def service(monkeypatch, u2netp_home):
    with FakeSegmind(api_key="k") as fake:
        monkeypatch.setenv("SEGMIND_API_URL", fake.url)
        monkeypatch.setenv("SEGMIND_API_KEY", "k")
        monkeypatch.setenv("BACKDROP_HOSTED_BACKOFF", "0.01")
        yield fake


def run(*args: str) -> int:
    from pipeline.interfaces.cli import batch

    return batch.run(batch.build_parser().parse_args(
        [*args, "--backend", "hosted", "--mask-model", "u2netp", "--seed", "7"]))


def photos(folder: Path, *relative: str) -> Path:
    for name in relative:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(small_asset("product-ring.jpg").read_bytes())
    return folder


def images(out: Path) -> list[str]:
    return sorted(str(path.relative_to(out)) for path in out.rglob("*.jpg"))


# --- 10. a rerun with other settings --------------------------------------------------------------------------

@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused_with_what_differs_and_redo_remakes(service, tmp_path, capsys):
    from pipeline import BackdropError

    shots, out = photos(tmp_path / "shots", "a.jpg", "b.jpg"), tmp_path / "out"
    assert run(str(shots), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 0
    assert run(str(shots), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 0  # same: skipped
    assert "0 made, 2 skipped" in capsys.readouterr().err and len(service.requests) == 2
    with pytest.raises(BackdropError, match=r"^--out: 2 item\(s\) in .* were made with other settings \(prompt: "
                                            r"'on a deck' -> 'in a jungle'; cn_weight: 0.9 -> 0.5, e.g. for a.jpg\); "
                                            r"give a new --out to keep both, or add --redo"):
        run(str(shots), "--ref", str(REFERENCE), "--prompt", "in a jungle", "--cn-weight", "0.5", "--out", str(out))
    other_reference = tmp_path / "other.jpg"
    other_reference.write_bytes(small_asset("scene-marble.jpg").read_bytes())
    with pytest.raises(BackdropError, match="ref_image: another reference picture"):
        run(str(shots), "--ref", str(other_reference), "--prompt", "on a deck", "--out", str(out))
    assert len(service.requests) == 2  # refused before any work
    assert run(str(shots), "--ref", str(REFERENCE), "--prompt", "in a jungle", "--out", str(out), "--redo") == 0
    assert images(out) == ["a_7.jpg", "b_7.jpg"]  # replaced, not added beside
    assert json.loads((out / "a_7.json").read_text())["request"]["prompt"] == "in a jungle"


# --- 11. folders under ** are mirrored; --out inside the input folder ---------------------------------------

def test_globs_mirror_the_input_folders_and_never_read_their_own_results(service, tmp_path, capsys):
    from pipeline import BackdropError

    catalogue = photos(tmp_path / "cat", "sku1/front.jpg", "sku2/front.jpg")
    out = catalogue / "results"
    pattern = f"{catalogue}/**/*.jpg"
    assert run(pattern, "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 0
    assert images(out) == ["sku1/front_7.jpg", "sku2/front_7.jpg"]
    assert f"sku1{os.sep}front.jpg" in capsys.readouterr().err  # progress shows where each photo is
    assert run(pattern, "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 0
    assert "0 made, 2 skipped (already made), 0 failed" in capsys.readouterr().err  # its results are not inputs
    with pytest.raises(BackdropError, match="--out: .* is the input folder itself"):
        run(str(catalogue / "sku1"), "--ref", str(REFERENCE), "--prompt", "x", "--out", str(catalogue / "sku1"))


# --- 12. killed between writing an image and recording it ---------------------------------------------------

def test_a_kill_after_the_image_is_in_place_never_makes_an_item_twice(service, tmp_path, monkeypatch):
    from pipeline.workflows import outputs

    shots, out = photos(tmp_path / "shots", "a.jpg", "b.jpg"), tmp_path / "out"
    real_write = outputs.write_atomically

    def killed_after_the_first_sidecar(path, data):
        real_write(path, data)
        if path.suffix == ".json" and path.parent == out:
            raise KeyboardInterrupt  # as a kill would: the image and its sidecar are in place, nothing else ran

    monkeypatch.setattr(outputs, "write_atomically", killed_after_the_first_sidecar)
    assert run(str(shots), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 130
    assert images(out) == ["a_7.jpg"]
    monkeypatch.setattr(outputs, "write_atomically", real_write)
    assert run(str(shots), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 0
    assert images(out) == ["a_7.jpg", "b_7.jpg"]  # never a_7-1.jpg beside an orphaned a_7.jpg


# --- 13. permissions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_results_sidecars_and_manifest_respect_the_umask(service, tmp_path, umask):
    shots, out = photos(tmp_path / "shots", "a.jpg"), tmp_path / "out"
    previous = os.umask(umask)
    try:
        assert run(str(shots), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 0
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for name in ("a_7.jpg", "a_7.json", "manifest.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == expected, name


# --- 14. --items ------------------------------------------------------------------------------------------------

def test_items_give_each_product_its_own_settings(service, tmp_path, capsys):
    photos(tmp_path / "shots", "ring.jpg", "sub/shoe.jpg")
    (tmp_path / "marble.jpg").write_bytes(small_asset("scene-marble.jpg").read_bytes())
    items = tmp_path / "items.csv"
    items.write_text("image,prompt,seed,cn_weight,reference\n"
                     "shots/ring.jpg,gold ring on marble,5,,marble.jpg\n"
                     "shots/sub/shoe.jpg,,9,0.5,\n")
    out = tmp_path / "out"
    assert run("--items", str(items), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"backdrop: 2 item(s) from {items}, 0 already made in {out}; loading the hosted API")
    ring = json.loads((out / "shots" / "ring_5.json").read_text())["request"]
    shoe = json.loads((out / "shots" / "sub" / "shoe_9.json").read_text())["request"]
    assert (ring["prompt"], ring["cn_weight"]) == ("gold ring on marble", 0.9)
    assert (shoe["prompt"], shoe["cn_weight"]) == ("on a deck", 0.5)
    sent = [json.loads(seen["body"]) for seen in service.requests]
    assert sent[0]["ref_image"] != sent[1]["ref_image"]  # the row's own reference, then the flag's


def test_json_lines_items_work_too(service, tmp_path):
    photos(tmp_path, "a.jpg")
    items = tmp_path / "items.jsonl"
    items.write_text('{"image": "a.jpg", "prompt": "on marble", "seed": 3, "preset": "jewelry"}\n\n')
    out = tmp_path / "out"
    assert run("--items", str(items), "--ref", str(REFERENCE), "--out", str(out)) == 0
    assert json.loads((out / "a_3.json").read_text())["request"]["prompt"] == "on marble"


@pytest.mark.parametrize(("text", "message"), [
    ("image,prompt\na.jpg,x\na.jpg,x\na.jpg\n", r"items.csv row 3 \(line 4\): prompt: is required"),
    ("image,prompt,cn_weight\na.jpg,x,0.5\na.jpg,x,7\n", r"items.csv row 2 \(line 3\): cn_weight: '7' is out of range"),
    ("image,colour\na.jpg,red\n", r"items.csv row 1 \(line 2\): unknown column 'colour'"),
    ("image\nmissing.jpg\n", r"items.csv row 1 \(line 2\): image: no file at .*missing.jpg"),
    ("image,preset\na.jpg,nope\n", r"items.csv row 1 \(line 2\): preset: 'nope' is unknown"),
    ("prompt\nx\n", r"items.csv row 1 \(line 2\): image: is required"),
])
def test_items_are_checked_before_the_first_image_with_the_row_in_every_message(service, tmp_path, text, message):
    from pipeline import BackdropError

    photos(tmp_path, "a.jpg")
    items = tmp_path / "items.csv"
    items.write_text(text)
    with pytest.raises(BackdropError, match="^--items: " + message):
        run("--items", str(items), "--ref", str(REFERENCE), "--out", str(tmp_path / "out"))
    assert service.requests == [] and not (tmp_path / "out").exists()


def test_an_out_folder_above_the_inputs_still_finds_them(service, tmp_path):
    shots = photos(tmp_path / "shots", "a.jpg")
    assert run(str(shots), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(tmp_path)) == 0
    assert (tmp_path / "a_7.jpg").is_file()


def test_a_manifest_from_before_made_with_was_recorded_compares_its_request():
    from pipeline.workflows.batch import _differences

    settings = {"prompt": "on a deck", "cn_weight": 0.9, "seed": -1}
    made_with = {"settings": settings, "ref_image": "abc", "mask": None, "backend": "local", "model_set": "sdxl"}
    assert _differences({"request": dict(settings)}, made_with) == []  # same command: skipped as before
    assert _differences({"request": settings | {"prompt": "x"}}, made_with) == ["prompt: 'x' -> 'on a deck'"]


# --- 15. the workflow without the command line -----------------------------------------------------------------

def test_a_catalogue_runs_from_options_built_in_python_step_by_step_or_whole(service, tmp_path, capsys):
    from pipeline import BackdropError
    from pipeline.backends import runner
    from pipeline.stages.reuse import Reuse
    from pipeline.workflows.batch import BatchOptions, items_to_make, plan_items, process_item, run_batch
    from pipeline.workflows.manifest import ResultWriter, open_manifest

    shots, out = photos(tmp_path / "shots", "a.jpg", "sub/b.jpg"), tmp_path / "out"
    options = BatchOptions(out=out, inputs=f"{shots}/**/*.jpg", backend="hosted", quiet=True,
                           request={"prompt": "on a deck", "ref_image": REFERENCE, "mask_model": "u2netp", "seed": 7,
                                    "qa_max_expansion": 100})  # a workflow test: never review
    items = plan_items(options)
    assert [str(item.relative) for item in items] == ["a.jpg", "sub/b.jpg"]
    manifest = open_manifest(out)
    first = items_to_make(items, manifest, out, redo=False)[0]
    row = process_item(first, runner("hosted"), Reuse(), ResultWriter(manifest, out))
    manifest.record(row)
    assert row["status"] == "done" and row["seeds"] == [7] and len(service.requests) == 1

    run_request, made = runner("hosted"), []

    def counted(request, **hooks):
        made.append(request.prompt)
        return run_request(request, **hooks)

    assert run_batch(options, runner=counted) == 0  # the item made step by step is skipped
    assert made == ["on a deck"] and images(out) == ["a_7.jpg", "sub/b_7.jpg"]
    assert "1 made, 1 skipped (already made), 0 failed" in capsys.readouterr().err
    # The command line writes and reads the same manifest: the same settings as flags find nothing left to do.
    assert run(f"{shots}/**/*.jpg", "--ref", str(REFERENCE), "--prompt", "on a deck", "--qa-max-expansion", "100",
               "--out", str(out)) == 0
    assert "0 made, 2 skipped (already made)" in capsys.readouterr().err and len(service.requests) == 2
    with pytest.raises(BackdropError, match="^--jobs: 9 is out of range; expected 1 to 8$"):
        run_batch(BatchOptions(out=out, inputs=str(shots), jobs=9))


def test_ray_batch_mistakes_are_said_before_ray_starts_naming_the_flag(tmp_path, capsys, monkeypatch):
    """A first-time user's mistakes with --ray: each an error naming the flag, exit 2, and said before a Ray
    runtime starts (ray.init is never reached), not an internal error after seconds of start-up."""
    import sys

    from pipeline import BackdropError
    from pipeline.interfaces.cli import main
    from pipeline.workflows import ray_cluster

    monkeypatch.setitem(sys.modules, "ray", None)  # any attempt to import Ray, let alone start it, would fail here
    shots = photos(tmp_path / "shots", "a.jpg")
    common = [str(shots), "--ref", str(REFERENCE), "--prompt", "on a deck", "--out", str(tmp_path / "out")]
    for flags, said in ((["--ray", "bogus"], "--ray: 'bogus' is not a Ray address; give none"),
                        (["--ray", "127.0.0.1:1"], "--ray: no Ray cluster answered at '127.0.0.1:1' (Connection "
                                                   "refused); start one with `make ray-cluster`"),
                        (["--ray", "--workers", "0"], "--workers: '0' is not a count or MIN:MAX range"),
                        (["--ray", "--jobs", "4"], "--jobs: sets how many hosted calls run at once; on Ray"),
                        (["--ray", "--qa-retries", "99"], "--qa-retries: 99 is out of range; expected 0 to 10")):
        assert main(["batch", *common, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and "internal error" not in err, err
    assert main(["batch", str(tmp_path / "nowhere"), *common[1:]]) == 2
    assert f"inputs: '{tmp_path / 'nowhere'}' does not exist" in capsys.readouterr().err
    assert main(["serve", "--ray", "--replicas", "4:1", "--port", "8123"]) == 2
    assert "--replicas: '4:1' is not a count" in capsys.readouterr().err
    with pytest.raises(BackdropError, match="^--ray: 'http://x' is not a Ray address"):
        ray_cluster.check_address("http://x")
    for good in (None, "", "auto", "local", "10.0.0.5:6379", "[::1]:6379", "ray://head.example:10001"):
        ray_cluster.check_address(good)
