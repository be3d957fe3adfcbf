"""Batches on Ray (python -m pipeline batch ... --ray): the local batch's outputs, manifest and resume from a
Ray Data pipeline, on the shared local Ray runtime (2 CPUs), tiny models and the real u2netp."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scenes import small_asset
from test_batch import FAST, ROOT, rows

pytestmark = pytest.mark.slow  # a Ray runtime and its workers: minutes on 2 cores

PHOTOS = ("product-perfume.jpg", "product-shoe.jpg", "product-ring.jpg", "product-chair.jpg", "scene-studio.jpg",
          "scene-marble.jpg")


@pytest.fixture
def catalogue(tmp_path):
    """Six real photos and one broken file."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in PHOTOS:
        (folder / name).write_bytes(small_asset(name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def arguments(catalogue: Path, out: Path) -> list[str]:
    return [str(catalogue), "--ref", str(ROOT / "assets" / "scene-wood.jpg"), "--prompt", "on a wooden deck",
            "--seed", "11", "--model-set", "tiny", *FAST, "--out", str(out), "--quiet"]


def ray_batch(*args: str, capsys) -> tuple[int, str]:
    """``python -m pipeline batch ... --ray`` in this process, on the tests' shared Ray runtime."""
    from pipeline.interfaces.cli import main

    capsys.readouterr()
    code = main(["batch", *args, "--ray"])
    return code, capsys.readouterr().err


def local_batch_in_a_worker(ray, *args: str) -> tuple[int, str]:
    """The local batch (no --ray), run in a Ray worker process of one CPU, as each stage of the Ray batch runs:
    the same process environment (Ray sets OMP_NUM_THREADS to a worker's CPUs) on both sides of the
    comparison, so what is compared is the pipeline's split, not two thread settings."""

    def run(argv: list[str]) -> tuple[int, str]:  # nested: sent to the worker by value
        import contextlib
        import io

        from pipeline.interfaces.cli import main

        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            code = main(argv)
        return code, said.getvalue()

    return ray.get(ray.remote(num_cpus=1)(run).remote(["batch", *args]), timeout=900)


WHEN = ("seconds", "finished_at", "timings", "outputs")  # what may differ between two runs' rows (outputs: the folder)


def test_a_ray_batch_makes_what_the_local_batch_makes_and_resumes(u2netp_home, ray_runtime, catalogue, tmp_path,
                                                                   capsys):
    """Pixel-identical images and the same manifest rows, quality and tries included. With light match 0.5 and
    --qa-max-product-change 0.05 some items are over on product_change and get a second try with the next seed
    (--qa-retries 1), some pass, and a scene with no product ends review on its mask uncertainty alone (the
    photo's own figure: one try)."""
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    flags = ["--light-match", "0.5", "--qa-max-product-change", "0.05", "--qa-retries", "1"]
    code, stderr = local_batch_in_a_worker(ray_runtime, *arguments(catalogue, local_out), *flags)
    assert code == 1 and "6 made, 0 skipped (already made), 1 failed" in stderr, stderr
    code, stderr = ray_batch(*arguments(catalogue, ray_out), *flags, capsys=capsys)
    assert code == 1 and "6 made, 0 skipped (already made), 1 failed" in stderr, stderr
    local_rows, ray_rows = rows(local_out), rows(ray_out)
    assert sorted(ray_rows) == sorted(local_rows) == sorted([*PHOTOS, "broken.png"])
    assert ray_rows["broken.png"]["status"] == "failed"
    assert ray_rows["broken.png"]["error"] == local_rows["broken.png"]["error"]
    retried = [name for name in PHOTOS if len(ray_rows[name]["tries"]) > 1]
    assert retried and {ray_rows[name]["status"] for name in PHOTOS} == {"done", "review"}, ray_rows
    for name in PHOTOS:
        here, there = local_rows[name], ray_rows[name]
        assert {key: value for key, value in there.items() if key not in WHEN} == \
               {key: value for key, value in here.items() if key not in WHEN}
        assert [Path(p).relative_to(ray_out) for p in there["outputs"]] == \
               [Path(p).relative_to(local_out) for p in here["outputs"]]
        for ours, theirs in zip(there["outputs"], here["outputs"]):
            assert_identical(ours, theirs)
            assert json.loads(Path(ours).with_suffix(".json").read_text())["seed"] == there["seeds"][0]
    review = sum(row["status"] == "review" for row in ray_rows.values())
    assert f"{review} to review" in stderr
    assert re.search(r"s on Ray \(first result after [\d.]+ s, then [\d.]+ s per item\); manifest: ", stderr), stderr

    code, stderr = ray_batch(*arguments(catalogue, ray_out), *flags, capsys=capsys)
    assert "0 made, 6 skipped (already made), 1 failed" in stderr, stderr
    assert len(list(ray_out.glob("*.jpg"))) == 6


def assert_identical(ours: str, theirs: str) -> None:
    """Pixel for pixel: the local batch ran in a worker of one CPU, as the Ray actor runs, so torch used one
    thread on both sides (speed.pin_cpu_threads; a different count may put a pixel a level apart)."""
    a, b = np.asarray(Image.open(ours)), np.asarray(Image.open(theirs))
    assert a.shape == b.shape and (a == b).all(), (ours, a.shape, b.shape, np.abs(a.astype(int) - b).max())


def pool_actors() -> list:
    """The generation pool's actors, as the handles Ray Data's executor holds in this (the driver's) process:
    Ray Data names no actor, so ``ray.get_actor`` cannot find them; each is a ``_MapWorker`` running Generator."""
    import gc

    import ray

    return [handle for handle in gc.get_objects() if isinstance(handle, ray.actor.ActorHandle)
            and "MapWorker" in handle._ray_actor_creation_function_descriptor.class_name]


def test_an_actor_killed_mid_run_costs_no_item(u2netp_home, ray_runtime, catalogue, tmp_path, capsys):
    """``ray.kill`` on the pool's actor once an item is done: Ray restarts it and retries what it held (Ray Data's
    actor pools restart and retry without limit), so every item still ends once, and none fails."""
    out = tmp_path / "out"
    killed: list = []

    def kill_the_actor_after_its_first_item() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            manifest = out / "manifest.jsonl"
            finished = manifest.read_text().count('"seconds"') if manifest.exists() else 0  # only results have it
            if finished:
                for actor in pool_actors():
                    ray_runtime.kill(actor, no_restart=False)
                    killed.append(finished)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_actor_after_its_first_item)
    killer.start()
    code, stderr = ray_batch(*arguments(catalogue, out), capsys=capsys)
    killer.join()
    assert killed and killed[0] < len(PHOTOS) + 1, f"the actor was never killed mid-run: {killed}"  # 7 items
    assert code == 1 and "6 made, 0 skipped (already made), 1 failed" in stderr, stderr
    manifest = rows(out)
    assert all(manifest[name]["status"] in ("done", "review") for name in PHOTOS)  # made, none failed
    assert len(list(out.glob("*.jpg"))) == 6  # each item's images once: no item written twice
