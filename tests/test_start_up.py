"""What the environment sets at start-up: the default mask model (BACKDROP_MASK_MODEL) and the warning
when the real models would run on a machine without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import BackdropError, BgReplaceRequest
from pipeline.masking import MASK_MODELS

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = "expected one of 'birefnet-general-lite', 'birefnet-general', 'birefnet-massive'"


def component(demo, elem_id: str):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


# --- BACKDROP_MASK_MODEL ------------------------------------------------------------------------------------

def test_mask_model_default_comes_from_the_environment(monkeypatch, bottle, reference):
    fields = {"image": bottle[0], "ref_image": reference, "prompt": "bottle"}
    assert BgReplaceRequest(**fields).mask_model == "birefnet-general-lite"
    monkeypatch.setenv("BACKDROP_MASK_MODEL", "U2NetP ")  # spelt as a person might
    assert BgReplaceRequest(**fields).mask_model == "u2netp"
    assert BgReplaceRequest.from_dict(fields).mask_model == "u2netp"
    assert BgReplaceRequest.from_dict(fields | {"mask_model": None}).mask_model == "u2netp"
    assert BgReplaceRequest(**fields, mask_model="silueta").mask_model == "silueta"  # the request still wins


def test_an_unknown_mask_model_in_the_environment_names_the_variable_value_and_choices(monkeypatch, bottle,
                                                                                      reference):
    from pipeline.request import check_environment

    monkeypatch.setenv("BACKDROP_MASK_MODEL", "bria-rmbg")
    with pytest.raises(BackdropError) as caught:
        check_environment()
    message = str(caught.value)
    assert message.startswith("BACKDROP_MASK_MODEL: 'bria-rmbg' is not allowed; " + ALLOWED)
    assert all(repr(name) in message for name in MASK_MODELS)
    with pytest.raises(BackdropError, match="^BACKDROP_MASK_MODEL: 'bria-rmbg'"):
        BgReplaceRequest(image=bottle[0], ref_image=reference, prompt="bottle")


def test_the_cli_stops_at_once_on_an_unknown_mask_model(tmp_path):
    env = os.environ | {"BACKDROP_MASK_MODEL": "nope"}
    for command in ([], ["batch"]):
        result = subprocess.run([sys.executable, "-m", "pipeline", *command, "--help"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("backdrop: error: BACKDROP_MASK_MODEL: 'nope' is not allowed; " + ALLOWED)


def test_the_cli_help_shows_the_default_the_environment_sets():
    env = os.environ | {"BACKDROP_MASK_MODEL": "u2netp"}
    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "Default: u2netp. (BACKDROP_MASK_MODEL sets the default.)" in " ".join(result.stdout.split())


def test_the_studio_and_rest_stop_at_start_up_on_an_unknown_mask_model(monkeypatch, capsys):
    import app
    from pipeline.rest import mount_rest

    monkeypatch.setenv("BACKDROP_MASK_MODEL", "nope")
    monkeypatch.setattr(app, "launch_studio", lambda **kwargs: pytest.fail("the studio started"))
    with pytest.raises(SystemExit) as caught:
        app.main(["--model-set", "tiny"])
    assert caught.value.code == 2
    assert "backdrop: error: BACKDROP_MASK_MODEL: 'nope' is not allowed; " + ALLOWED in capsys.readouterr().err
    with pytest.raises(BackdropError, match="^BACKDROP_MASK_MODEL: 'nope'"):
        mount_rest(None, model_set="tiny", queue=None)


def test_the_studio_mask_model_dropdown_starts_on_the_environments_choice(monkeypatch):
    import app

    monkeypatch.setenv("BACKDROP_MASK_MODEL", "u2netp")
    demo = app.build_demo(model_set="tiny")
    assert component(demo, "mask_model").value == "u2netp"
    generate = next(fn for fn in demo.fns.values() if fn.api_name == "generate")
    assert generate.fn.__signature__.parameters["mask_model"].default == "u2netp"
