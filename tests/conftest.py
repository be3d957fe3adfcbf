"""Test bed: offline, tiny random models through the real loading code, the real u2netp mask model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("BACKDROP_CACHE", str(ROOT / ".cache" / "backdrop"))
os.environ.setdefault("U2NET_HOME", str(ROOT / ".cache" / "u2net"))

# tests/ is on the import path through pyproject.toml's pythonpath, set before this file is read.
from scenes import perfume_bottle, reference_scene  # noqa: E402


@pytest.fixture(scope="session")
def u2netp_home() -> Path:
    home = Path(os.environ["U2NET_HOME"])
    if not (home / "u2netp.onnx").exists():
        pytest.fail(f"{home}/u2netp.onnx is missing: run `make models` (make test does it) to provision it offline")
    return home


@pytest.fixture
def mask_model_runs(monkeypatch):
    """The name of the thread of each real mask-model run (rembg.remove), from an empty mask cache."""
    import threading

    import rembg

    from pipeline.stages import masking

    masking.clear_mask_cache()
    runs: list[str] = []
    real_remove = rembg.remove
    monkeypatch.setattr(rembg, "remove", lambda *a, **k: runs.append(threading.current_thread().name)
                        or real_remove(*a, **k))
    yield runs
    masking.clear_mask_cache()


@pytest.fixture(scope="session")
def tiny_models():
    from pipeline.backends.local.models import load_models

    return load_models("tiny", device="cpu")


@pytest.fixture(scope="session")
def bottle():
    return perfume_bottle(512, 512)


@pytest.fixture(scope="session")
def reference():
    return reference_scene("jungle", 256, 256)


@pytest.fixture
def make_request(bottle, reference):
    """A valid request on the rendered bottle with its true alpha as the mask; overrides by keyword."""
    from pipeline import BgReplaceRequest

    def make(**overrides):
        fields = dict(
            image=bottle[0], ref_image=reference, prompt="perfume bottle on a mossy rock in a jungle",
            mask=bottle[1], seed=1234, scheduler="Euler", num_inference_steps=20, resolution=96,
        )
        return BgReplaceRequest(**(fields | overrides))

    return make


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by playwright (which never downloads a browser of its own)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium: `make test` installs it with apt")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def ray_runtime():
    """One local Ray runtime for every Ray test (2 CPUs, no dashboard), shut down at the session's end.
    Without Ray installed (`make test` installs requirements-ray.txt) the Ray tests fail, except outside CI."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must have Ray: `make test` installs requirements-ray.txt")
        pytest.skip("Ray is not installed (pip install -c constraints.txt -r requirements-ray.txt)")
    from pipeline.workflows.ray_cluster import connect

    # Ray starts its workers at nice 15, behind everything else on the machine: on a test machine shared with
    # other work that starves them (a 3-minute replica start-up here), so they run at the tests' priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray = connect(None, num_cpus=2, num_gpus=0)
    yield ray
    ray.shutdown()
