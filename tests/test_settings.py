"""Every environment variable through one table (pipeline.contract.settings): the README lists them all,
a bad value of each kind is one line naming the variable, a good one is used, and a mistake stops the
CLI, the studio and the REST endpoint at start-up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import BackdropError
from pipeline.contract.settings import SETTINGS, check_settings, setting

ROOT = Path(__file__).resolve().parent.parent

# One bad value per kind that can be wrong (text, comma lists and paths take anything), and what is allowed.
BAD_VALUES = {
    "whole": ("BACKDROP_QUEUE_SIZE", "lots", "a whole number from 1 to 1000"),
    "number": ("BACKDROP_HOSTED_TIMEOUT", "soon", "a number from 0.1 to 3600"),
    "flag": ("BACKDROP_ALLOW_URLS", "maybe", "a yes/no value: 1, true, yes or on; 0, false, no or off"),
    "choice": ("BACKDROP_MEMORY_MODE", "all", "one of 'none', 'model', 'sequential'"),
    "url": ("SEGMIND_API_URL", "ftp://example.com/bg", "an http:// or https:// URL"),
    "device": ("BACKDROP_DEVICE", "tpu", "cuda, cuda:N (a GPU's number), mps or cpu"),
    "networks": ("BACKDROP_URL_ALLOW_NETWORKS", "10.1.2.0/24,10.1.3.0/33",
                 "comma-separated networks such as 10.1.2.0/24"),
}


def readme_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\b(?:BACKDROP|SEGMIND)_[A-Z_]+\b", section))


def test_the_readme_lists_exactly_the_variables_the_settings_module_reads():
    listed = readme_variables()
    assert listed - set(SETTINGS) == set(), "the README lists variables Backdrop does not read"
    assert set(SETTINGS) - listed == set(), "variables missing from the README's 'Environment variables'"


def test_no_module_reads_our_variables_around_the_settings_module():
    """os.environ for a BACKDROP_*/SEGMIND_* variable is read only in settings.py (app.py may write one)."""
    reads = re.compile(r"environ(?:\.get\(|\[)\s*[\"'](?:BACKDROP|SEGMIND)_[A-Z_]*[\"'](?!\]\s*=[^=])")
    files = [*sorted((ROOT / "pipeline").rglob("*.py")), ROOT / "app.py"]
    offenders = [str(path.relative_to(ROOT)) for path in files
                 if path.name != "settings.py" and reads.search(path.read_text())]
    assert offenders == []


def test_every_kind_that_can_be_wrong_has_a_bad_value_here():
    assert {spec.kind for spec in SETTINGS.values()} - {"text", "list", "path"} == set(BAD_VALUES)
    assert all(SETTINGS[name].kind == kind for kind, (name, _, _) in BAD_VALUES.items())


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(monkeypatch, kind):
    name, value, allowed = BAD_VALUES[kind]
    monkeypatch.setenv(name, value)
    expected = f"{name}: {value!r} is not allowed; expected {allowed}"
    with pytest.raises(BackdropError) as caught:
        setting(name)
    assert str(caught.value) == expected and caught.value.field == name
    with pytest.raises(BackdropError, match=f"^{re.escape(expected)}$"):
        check_settings()


@pytest.mark.parametrize("name, value", [("BACKDROP_PORT", "0"), ("BACKDROP_PORT", "65536"),
                                         ("BACKDROP_QUEUE_SIZE", "2.5"), ("BACKDROP_MAX_BODY_MB", "nan"),
                                         ("BACKDROP_HOSTED_BACKOFF", "-1"), ("BACKDROP_RESOLUTION", "32")])
def test_numbers_out_of_range_or_not_whole_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(BackdropError, match=f"^{name}: '{re.escape(value)}' is not allowed; expected a "):
        setting(name)


def test_a_long_value_is_shortened_in_the_message(monkeypatch):
    monkeypatch.setenv("BACKDROP_MEMORY_MODE", "x" * 500)
    with pytest.raises(BackdropError) as caught:
        setting("BACKDROP_MEMORY_MODE")
    assert "x" * 57 + "..." in str(caught.value) and len(str(caught.value)) < 200


def test_good_values_are_parsed_by_kind_and_read_when_asked(monkeypatch, tmp_path):
    for name in ("BACKDROP_QUEUE_SIZE", "BACKDROP_COMPILE", "BACKDROP_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    assert setting("BACKDROP_QUEUE_SIZE") == 16 and setting("BACKDROP_COMPILE") is False
    assert setting("BACKDROP_CORS_ORIGINS") == ()
    monkeypatch.setenv("BACKDROP_QUEUE_SIZE", " 3 ")
    monkeypatch.setenv("BACKDROP_COMPILE", "On")
    monkeypatch.setenv("BACKDROP_CORS_ORIGINS", " https://a.example, ,https://b.example ")
    monkeypatch.setenv("BACKDROP_HOSTED_TIMEOUT", "2.5")
    monkeypatch.setenv("BACKDROP_MASK_MODEL", "U2NetP")
    monkeypatch.setenv("BACKDROP_PRESETS_DIR", str(tmp_path))
    assert setting("BACKDROP_QUEUE_SIZE") == 3 and setting("BACKDROP_COMPILE") is True
    assert setting("BACKDROP_CORS_ORIGINS") == ("https://a.example", "https://b.example")
    assert setting("BACKDROP_HOSTED_TIMEOUT") == 2.5 and setting("BACKDROP_MASK_MODEL") == "u2netp"
    assert setting("BACKDROP_PRESETS_DIR") == tmp_path
    check_settings()


def test_empty_is_unset_except_for_the_model_ids(monkeypatch):
    monkeypatch.setenv("BACKDROP_QUEUE_SIZE", " ")
    monkeypatch.setenv("BACKDROP_VAE", "")
    assert setting("BACKDROP_QUEUE_SIZE") == 16
    assert setting("BACKDROP_VAE") == ""  # the base model's own VAE


def test_the_modules_use_the_values(monkeypatch, tmp_path):
    from pipeline.backends.hosted import hosted_settings
    from pipeline.backends.local.speed import SpeedOptions
    from pipeline.contract.images import max_pixels
    from pipeline.interfaces.access import cors_origins
    from pipeline.interfaces.fetch import urls_allowed
    from pipeline.interfaces.rest import api_keys, max_body_bytes
    from pipeline.workflows.presets import user_dir
    from pipeline.workflows.queue import GenerationQueue, gpu_queue

    monkeypatch.setenv("BACKDROP_QUEUE_SIZE", "3")
    monkeypatch.setenv("BACKDROP_ALLOW_URLS", "yes")
    monkeypatch.setenv("BACKDROP_MAX_BODY_MB", "0.5")
    monkeypatch.setenv("BACKDROP_MAX_PIXELS", "10000")
    monkeypatch.setenv("BACKDROP_API_KEYS", "alpha, beta")
    monkeypatch.setenv("BACKDROP_CORS_ORIGINS", "https://shop.example/")
    monkeypatch.setenv("BACKDROP_PRESETS_DIR", str(tmp_path))
    monkeypatch.setenv("BACKDROP_COMPILE", "true")
    monkeypatch.setenv("BACKDROP_HOSTED_BACKOFF", "0.25")
    monkeypatch.setenv("SEGMIND_API_URL", " http://127.0.0.1:9/v1/bg-replace ")
    assert GenerationQueue().max_waiting == 3 and gpu_queue.max_waiting == 3  # built at import, read now
    assert GenerationQueue(5).max_waiting == 5
    assert urls_allowed() and max_body_bytes() == 512 * 1024 and max_pixels() == 10000
    assert api_keys() == {"alpha", "beta"} and cors_origins() == {"https://shop.example"}
    assert user_dir() == tmp_path
    assert SpeedOptions.for_runtime("cuda", "none").compile
    hosted = hosted_settings(api_key="k")
    assert (hosted.url, hosted.backoff, hosted.timeout) == ("http://127.0.0.1:9/v1/bg-replace", 0.25, 120.0)


def test_the_config_file_is_checked_and_the_environment_wins(monkeypatch, tmp_path):
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"native_resolution": 768, "controlnet": "file/controlnet"}))
    monkeypatch.setenv("BACKDROP_CONFIG", str(config))
    monkeypatch.delenv("BACKDROP_CONTROLNET", raising=False)
    monkeypatch.delenv("BACKDROP_RESOLUTION", raising=False)
    assert setting("BACKDROP_RESOLUTION") == 768 and setting("BACKDROP_CONTROLNET") == "file/controlnet"
    monkeypatch.setenv("BACKDROP_RESOLUTION", "896")
    assert setting("BACKDROP_RESOLUTION") == 896
    config.write_text(json.dumps({"native_resolution": "big"}))
    monkeypatch.delenv("BACKDROP_RESOLUTION")
    with pytest.raises(BackdropError) as caught:
        check_settings()
    assert str(caught.value) == (f"BACKDROP_CONFIG: {config}: native_resolution: 'big' is not allowed; "
                                 "expected a whole number from 64 to 4096")


def test_the_cli_stops_at_start_up_on_a_bad_variable():
    env = os.environ | {"BACKDROP_QUEUE_SIZE": "lots"}
    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("backdrop: error: BACKDROP_QUEUE_SIZE: 'lots' is not allowed; "
                             "expected a whole number from 1 to 1000\n")


@pytest.mark.slow
def test_the_studio_refuses_to_start_on_a_bad_variable():
    env = os.environ | {"BACKDROP_PORT": "http"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "app.py", "--model-set", "tiny"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("backdrop: error: BACKDROP_PORT: 'http' is not allowed; "
                             "expected a whole number from 1 to 65535\n")
    assert "Traceback" not in result.stderr and "Backdrop studio:" not in result.stdout
    assert time.monotonic() - started < 60  # stopped before the studio was built or launched


def test_rest_refuses_to_mount_on_a_bad_variable(monkeypatch):
    from pipeline.interfaces.rest import mount_rest

    monkeypatch.setenv("BACKDROP_MAX_BODY_MB", "lots")
    with pytest.raises(BackdropError, match=r"^BACKDROP_MAX_BODY_MB: 'lots' is not allowed; expected a number "):
        mount_rest(None, model_set="tiny", queue=None)
