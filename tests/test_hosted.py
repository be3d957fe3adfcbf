"""The hosted backend against a real HTTP server on 127.0.0.1 that checks the bg-replace contract."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_segmind import SPEC_FIELDS, FakeSegmind
from scenes import perfume_bottle

from pipeline import BackdropError, generate
from pipeline.backends.hosted import HostedAPIError, HostedSettings, hosted_settings
from pipeline.workflows.outputs import save_result

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key"


@pytest.fixture
def service():
    with FakeSegmind(api_key=KEY) as fake:
        yield fake


def settings_for(fake: FakeSegmind, **overrides) -> HostedSettings:
    return HostedSettings(**({"url": fake.url, "api_key": KEY, "timeout": 5.0, "backoff": 0.01} | overrides))


def run_hosted(fake, request, **overrides):
    from pipeline.backends.hosted import generate_hosted

    return generate_hosted(request, settings=settings_for(fake, **overrides))


def test_one_call_per_sample_with_consecutive_seeds_and_the_contracts_body(service, make_request):
    result = run_hosted(service, make_request(samples=3, seed=40))
    assert result.seeds == (40, 41, 42) and len(result.images) == 3 and result.backend == "hosted"
    assert len(service.requests) == 3
    for seen, seed in zip(service.requests, (40, 41, 42)):
        body = json.loads(seen["body"])
        assert seen["path"] == "/v1/bg-replace" and seen["headers"]["x-api-key"] == KEY
        assert set(body) == SPEC_FIELDS and body["seed"] == seed and body["samples"] == 1
        assert body["prompt"] == "perfume bottle on a mossy rock in a jungle" and body["scheduler"] == "Euler"
    assert result.info["remaining_credits"] == 97 and result.info["calls"] == 3
    assert np.abs(np.asarray(result.images[0], int) - np.asarray(result.images[1], int)).mean() > 1


@pytest.mark.slow
def test_hosted_results_keep_the_product_pixels_at_the_photos_size(service, make_request):
    photo, alpha = perfume_bottle(900, 600)
    result = run_hosted(service, make_request(image=photo, mask=alpha))
    out = np.asarray(result.images[0]).astype(int)
    assert result.images[0].size == (900, 600)
    solid = np.asarray(alpha) == 255
    assert np.abs(out[solid] - np.asarray(photo).astype(int)[solid]).max() <= 1


def test_json_base64_replies_are_read(service, make_request):
    service.reply_json = True
    assert run_hosted(service, make_request()).images[0].size == (512, 512)


@pytest.mark.parametrize(
    ("status", "words", "attempts"),
    [
        (400, "rejected the request (400 bad request). The service said: scripted 400", 1),
        (403, "denied access (403 forbidden)", 1),
        (404, "address was not found (404): check SEGMIND_API_URL", 1),
        (405, "does not accept POST", 1),
        (406, "not enough credits (406): top up at https://cloud.segmind.com", 1),
        (429, "rate limiting this key (429 too many requests)", 3),
        (500, "internal error (500)", 3),
        (502, "bad gateway", 3),
        (504, "gateway timed out", 3),
    ],
)
def test_each_error_code_becomes_a_message_with_bounded_retries(service, make_request, status, words, attempts):
    service.script = [status] * 3
    with pytest.raises(HostedAPIError) as caught:
        run_hosted(service, make_request())
    assert words in str(caught.value)
    assert caught.value.status == status and caught.value.exit_code == 1
    assert len(service.requests) == attempts


def test_401_says_the_key_was_refused(service, make_request):
    with pytest.raises(HostedAPIError, match=r"refused the key \(401 unauthorized\).*Invalid API key") as caught:
        run_hosted(service, make_request(), api_key="wrong-key")
    assert len(service.requests) == 1 and "wrong-key" not in str(caught.value)


def test_a_retry_that_succeeds_is_invisible_but_counted(service, make_request):
    service.script = [429, 503]
    result = run_hosted(service, make_request())
    assert len(result.images) == 1 and result.info["attempts"] == 3


def test_timeout_is_reported_and_not_retried(service, make_request):
    service.delay = 1.5
    with pytest.raises(HostedAPIError, match=r"did not answer within 0.3 s \(BACKDROP_HOSTED_TIMEOUT\)"):
        run_hosted(service, make_request(), timeout=0.3)
    assert len(service.requests) == 1


def test_unreachable_service_is_retried_three_times(make_request, caplog):
    with FakeSegmind() as fake:
        url = fake.url
    caplog.set_level(logging.INFO, logger="backdrop.hosted")
    with pytest.raises(HostedAPIError, match="could not reach the hosted API .* after 3 attempts"):
        run_hosted(type("Gone", (), {"url": url})(), make_request())
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2


def test_missing_key_is_a_user_error(monkeypatch):
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    with pytest.raises(BackdropError, match="^api_key: the hosted API needs a key: set SEGMIND_API_KEY"):
        hosted_settings()
    monkeypatch.setenv("SEGMIND_API_KEY", "env-key")
    monkeypatch.setenv("SEGMIND_API_URL", "http://127.0.0.1:9/v1/bg-replace")
    settings = hosted_settings()
    assert settings.api_key == "env-key" and settings.url.endswith(":9/v1/bg-replace")
    assert "env-key" not in repr(settings)


def test_the_key_never_leaks_into_logs_errors_or_files(service, make_request, caplog, tmp_path):
    secret = "sk-live-very-secret"
    service.api_key = secret
    service.script = [500, 500, 500]
    service.error_body = {"error": f"upstream failed for key {secret}"}  # a service that echoes the key
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HostedAPIError) as caught:
        run_hosted(service, make_request(), api_key=secret)
    assert secret not in str(caught.value) and "***" in str(caught.value)
    result = run_hosted(service, make_request(), api_key=secret)
    paths = save_result(result, tmp_path)
    assert all(secret not in path.with_suffix(".json").read_text() for path in paths)
    assert secret not in caplog.text and secret not in repr(result)


def test_generate_dispatches_to_the_hosted_backend(service, make_request, monkeypatch):
    monkeypatch.setenv("SEGMIND_API_URL", service.url)
    monkeypatch.setenv("BACKDROP_HOSTED_BACKOFF", "0.01")
    result = generate(make_request(), backend="hosted", api_key=KEY)
    assert result.backend == "hosted" and len(service.requests) == 1
    with pytest.raises(BackdropError, match="^backend: 'cloud' is unknown"):
        generate(make_request(), backend="cloud")


def test_an_option_the_backend_does_not_take_is_a_user_error_naming_it(service, make_request, monkeypatch):
    monkeypatch.setenv("SEGMIND_API_URL", service.url)
    with pytest.raises(BackdropError, match=r"^backend: the hosted backend does not take models \(its own "
                                            r"options: api_key, settings\)$") as refused:
        generate(make_request(), backend="hosted", models=object(), api_key=KEY)
    assert refused.value.field == "backend" and refused.value.exit_code == 2
    assert service.requests == []  # refused before any call


def test_a_runner_makes_many_requests_on_one_backend(service, make_request, monkeypatch):
    from pipeline.backends import runner

    monkeypatch.setenv("SEGMIND_API_URL", service.url)
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    said = []
    run = runner("hosted", model_set="tiny", on_progress=said.append)  # the hosted API has no models to load
    results = [run(make_request(seed=seed)) for seed in (1, 2)]
    assert [list(result.seeds) for result in results] == [[1], [2]] and len(service.requests) == 2
    assert said and {progress.stage for progress in said} != {"load"}  # the calls' own progress, not a load
    with pytest.raises(BackdropError, match="^backend: 'cloud' is unknown"):
        runner("cloud")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=os.environ | env)


@pytest.mark.slow
def test_cli_hosted_backend(service, tmp_path, u2netp_home):
    photo, _ = perfume_bottle(640, 480)
    photo.save(tmp_path / "bottle.png")
    args = ["--image", str(tmp_path / "bottle.png"), "--ref", str(ROOT / "assets" / "scene-wood.jpg"),
            "--prompt", "bottle on wood", "--samples", "2", "--seed", "7", "--mask-model", "u2netp",
            "--backend", "hosted", "--out", str(tmp_path / "out")]
    done = cli(*args, env={"SEGMIND_API_URL": service.url, "SEGMIND_API_KEY": KEY})
    assert done.returncode == 0, done.stderr
    assert [Path(line).name for line in done.stdout.split()] == ["bottle_7.jpg", "bottle_8.jpg"]
    assert "98 credits left" in done.stderr
    refused = cli(*args, "--quiet", env={"SEGMIND_API_URL": service.url, "SEGMIND_API_KEY": "sk-wrong-123"})
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("backdrop: error: the hosted API refused the key (401")
    assert "sk-wrong-123" not in refused.stderr


def test_shadows_and_light_match_are_applied_locally_to_the_hosted_background(service, make_request, tmp_path):
    """The hosted contract is unchanged (the body has only its own fields); the layers and the light
    match are made here, over the background the service sent, and the sidecar says how the product changed."""
    from pipeline.stages.grounding import footing

    photo, alpha = perfume_bottle(300, 400)
    plain = run_hosted(service, make_request(image=photo, mask=alpha, seed=7))
    grounded = run_hosted(service, make_request(image=photo, mask=alpha, seed=7, shadow="soft", reflection=0.4,
                                                light_match=1.0))
    for seen in service.requests:
        assert set(json.loads(seen["body"])) == SPEC_FIELDS
    before, after = (np.asarray(result.images[0], int) for result in (plain, grounded))
    a = np.asarray(alpha)
    feet = footing(a)
    changed = np.abs(after - before).max(axis=2) > 0
    assert changed[feet.ground:].any() and not changed[:feet.top][a[:feet.top] == 0].any()
    assert len(grounded.intermediates.grounding) == 1 and not plain.intermediates.grounding
    assert grounded.info["product_change"][0] > 0 and "product_change" not in plain.info
    sidecar = json.loads(save_result(grounded, tmp_path)[0].with_suffix(".json").read_text())
    assert (sidecar["request"]["shadow"] == "soft"
            and sidecar["info"]["product_change"] == grounded.info["product_change"])
