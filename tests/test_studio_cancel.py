"""Cancel is per caller: one caller's Cancel stops that caller's own run and nobody else's.

The studio keys each run in progress by its caller's Gradio session (one per browser tab and per
``gradio_client.Client``). Runs of callers without a session (the handlers called in-process) each get a
key of their own: they used to share one key, "api", so any such caller's cancel stopped all of them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.interfaces.studio.cancel import CancelBoard, caller_key

ROOT = Path(__file__).resolve().parent.parent


class Session:
    def __init__(self, session_hash):
        self.session_hash = session_hash


# --- the bookkeeping ---------------------------------------------------------------------------------------

def test_a_cancel_reaches_only_its_callers_runs_in_progress():
    board = CancelBoard()
    with board.run("tab-a") as a_first, board.run("tab-a") as a_second, board.run("tab-b") as b_run:
        assert board.cancel("tab-a") == 2
        assert a_first() and a_second() and not b_run()
    assert board.running("tab-a") == board.running("tab-b") == 0  # nothing is kept once the runs end


def test_a_cancel_with_no_run_in_progress_does_not_stop_the_next_run():
    board = CancelBoard()
    assert board.cancel("tab-a") == 0
    with board.run("tab-a") as should_cancel:
        assert not should_cancel()
    with board.run("tab-a") as first:
        board.cancel("tab-a")
    with board.run("tab-a") as second:  # the last run's cancel is not carried over
        assert first() and not second()


def test_runs_without_a_session_are_each_on_their_own():
    board = CancelBoard()
    with board.run(None) as first, board.run(None) as second:
        assert board.cancel(None) == 0 and board.cancel("api") == 0
        assert not first() and not second()
    assert caller_key(None) is None and caller_key(Session("")) is None and caller_key(Session("x")) == "x"


# --- the studio's handlers, in-process ------------------------------------------------------------------------

def studio_values(product: str) -> dict:
    return {"image": str(ROOT / "assets" / product), "ref_image": str(ROOT / "assets" / "scene-marble.jpg"),
            "prompt": "on marble", "scheduler": "Euler", "num_inference_steps": 20, "mask_model": "u2netp",
            "resolution": 64, "seed": 3}


@pytest.mark.parametrize("canceller", [Session("someone-else"), None], ids=["another session", "no session"])
def test_another_callers_cancel_mid_run_leaves_the_run_to_finish(tmp_path, u2netp_home, tiny_models, canceller):
    """Pressed by someone else while this run denoises, Cancel stops nothing here. Before runs were filed
    by caller, two callers without a session shared one key: the "no session" case stopped this run."""
    import gradio as gr

    from pipeline.interfaces.studio.handlers import Studio, cancel

    steps = []

    def progress(fraction, desc=None):
        if desc and desc.startswith("Step"):
            steps.append(desc)
            if len(steps) == 1:
                cancel(canceller)

    gallery, *_ = Studio("tiny", tmp_path).generate(studio_values("product-ring.jpg"), request=None,
                                                    progress=progress)
    assert gallery != gr.skip() and len(gallery) == 1 and len(steps) == 20


# --- two real clients ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def studio(tmp_path_factory, u2netp_home, tiny_models):
    from servers import studio_page

    output_dir = tmp_path_factory.mktemp("outputs")
    with studio_page(output_dir) as url:
        yield url, output_dir


def client_inputs(product: str, steps: int) -> dict:
    from gradio_client import handle_file

    return dict(image=handle_file(str(ROOT / "assets" / product)),
                ref_image=handle_file(str(ROOT / "assets" / "scene-marble.jpg")), prompt="on marble", samples=2,
                scheduler="Euler", num_inference_steps=steps, seed=5, mask_model="u2netp", resolution=128)


def wait_for_denoising(job, timeout: float = 120) -> None:
    """Until ``job``'s progress bar counts denoising steps (it is running, past loading and masking)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = job.status().progress_data or []
        if any((unit.desc or "").startswith("Step") for unit in progress):
            return
        assert not job.done(), "the run ended before it was cancelled"
        time.sleep(0.05)
    pytest.fail("the run never reached denoising")


@pytest.mark.slow
def test_one_clients_cancel_stops_its_own_run_and_not_another_clients(studio):
    """Client A cancels its running generation while client B's waits behind it (the studio runs one
    generation at a time): A's stops and saves nothing, B's runs to the end and is saved. Then B cancels
    while A's new run denoises and B has none: A's run finishes."""
    from gradio_client import Client

    url, output_dir = studio
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    assert a.session_hash != b.session_hash

    a_job = a.submit(**client_inputs("product-ring.jpg", 100), api_name="/generate")
    wait_for_denoising(a_job)
    b_job = b.submit(**client_inputs("product-shoe.jpg", 20), api_name="/generate")
    a.predict(api_name="/cancel")
    a_job.result(timeout=120)  # the panels keep what they showed: no error
    b_gallery, _, _, b_summary = b_job.result(timeout=300)
    assert len(b_gallery) == 2 and "5, 6" in b_summary
    assert len(list(output_dir.glob("product-shoe-*.jpg"))) == 2
    assert not list(output_dir.glob("product-ring-*")), "A's cancelled run saved files"

    a_job = a.submit(**client_inputs("product-chair.jpg", 40), api_name="/generate")
    wait_for_denoising(a_job)
    b.predict(api_name="/cancel")
    a_gallery, *_ = a_job.result(timeout=300)
    assert len(a_gallery) == 2 and len(list(output_dir.glob("product-chair-*.jpg"))) == 2
