"""The bg-replace-compatible REST endpoint, against a live server with the tiny model set."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
from PIL import Image
from scenes import small_asset
from servers import host_on_127_0_0_2, post_json, running_studio

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = small_asset("product-ring.jpg")
SCENE = small_asset("scene-marble.jpg")
FAST = {"scheduler": "Euler", "num_inference_steps": 20, "resolution": 64, "mask_model": "u2netp"}


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def body(**overrides):
    return ({"image": b64(PRODUCT), "ref_image": b64(SCENE), "prompt": "gold ring on marble", "seed": 3}
            | FAST | overrides)


@pytest.fixture(scope="module")
def server(tmp_path_factory, u2netp_home, tiny_models):
    with running_studio(tmp_path_factory.mktemp("out")) as url:
        yield f"{url}/v1"


def post(server, payload, **kwargs):
    return post_json(f"{server}/bg-replace", payload, **kwargs)


def test_one_sample_comes_back_as_a_jpeg(server):
    reply = post(server, body())
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(reply.content)).size == Image.open(PRODUCT).size
    assert reply.headers["x-seeds"] == "3" and float(reply.headers["x-inference-time"]) > 0
    assert reply.headers["x-quality-verdict"] in ("ok", "review")  # the quality check, measured with u2netp
    assert float(reply.headers["x-quality-expansion"]) >= 0 and reply.headers["x-quality-upscale"] == "1"


@pytest.mark.slow
def test_base64_true_gives_json_and_data_urls_are_accepted(server):
    reply = post(server, body(base64=True, ref_image="data:image/jpeg;base64," + b64(SCENE)))
    data = reply.json()
    assert reply.status_code == 200 and data["seeds"] == [3] and data["image"] == data["images"][0]
    assert Image.open(io.BytesIO(base64.b64decode(data["image"]))).format == "JPEG"


@pytest.mark.slow
def test_several_samples_are_never_dropped(server):
    reply = post(server, body(samples=3, seed=10))
    data = reply.json()
    assert reply.status_code == 200 and data["seeds"] == [10, 11, 12] and len(data["images"]) == 3
    assert reply.headers["x-seeds"] == "10,11,12"
    assert len(data["quality"]) == 3 and all(quality["expansion"] is not None for quality in data["quality"])
    assert reply.headers["x-quality-verdict"] == ",".join(quality["verdict"] for quality in data["quality"])


@pytest.mark.slow
def test_shadow_reflection_and_light_match_in_a_body(server):
    plain = post(server, body())
    grounded = post(server, body(shadow="soft", shadow_opacity=0.8, shadow_angle=90, reflection=0.3, light_match=1))
    assert grounded.status_code == 200, grounded.text
    assert float(grounded.headers["x-product-change"]) > 0 and "x-product-change" not in plain.headers
    assert grounded.content != plain.content


@pytest.mark.slow
def test_png_output_format(server):
    reply = post(server, body(output_format="png"))
    assert reply.headers["content-type"] == "image/png"


@pytest.mark.slow
def test_api_keys_when_configured(server, monkeypatch):
    monkeypatch.setenv("BACKDROP_API_KEYS", "alpha, beta")
    assert post(server, body()).status_code == 401
    wrong = post(server, body(), headers={"x-api-key": "gamma"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "missing or wrong x-api-key header"
    assert post(server, body(), headers={"x-api-key": "beta"}).status_code == 200
    monkeypatch.delenv("BACKDROP_API_KEYS")
    assert post(server, body()).status_code == 200


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (body(prompt=""), "prompt: must not be empty"),
        ({k: v for k, v in body().items() if k != "prompt"}, "prompt: is required"),
        (body(cfg=3), "unknown field 'cfg'"),
        (body(samples=9), "samples: 9 is out of range; expected a whole number from 1 to 4"),
        (body(samples=1.5), "samples: 1.5 is not a whole number"),
        (body(cn_weight="strong"), "cn_weight: 'strong' is not a number"),
        (body(guidance_scale=True), "guidance_scale: True is a bool, not a number"),
        (body(scheduler="Turbo"), "scheduler: 'Turbo' is unknown; expected one of 'DDIM'"),
        (body(seed=-5), "seed: -5 is out of range"),
        (body(shadow="dramatic"), "shadow: 'dramatic' is unknown; expected one of 'none', 'contact'"),
        (body(shadow_opacity=2), "shadow_opacity: 2 is out of range; expected a number from 0 to 1"),
        (body(shadow_angle="north"), "shadow_angle: 'north' is not a number; expected a number from 0 to 360"),
        (body(strength=[1]), "strength: [1] is a list, not a number"),
        (body(strength=0.02, num_inference_steps=20), "strength: 0.02 leaves no denoising step at 20 steps; at 20 "
                                                      "steps use at least 0.05"),
        (body(image="not base64!"), "image: not valid base64 image data"),
        (body(image=""), "image: is required"),
        (body(image=base64.b64encode(b"hello").decode()), "image: not a readable image file"),
        (body(ref_image=42), "ref_image: expected an image"),
        (body(image="https://example.com/a.jpg"), "image: image URLs are turned off on this server"),
        ('{"prompt": ', "the body is not valid JSON"),
        ("[1, 2]", "the body must be a JSON object, not list"),
        (b"\xff\xfe{}", "the body is not UTF-8 text"),
        (json.dumps(body(cn_weight=float("nan"))), "cn_weight: nan is not a finite number"),
        (json.dumps(body(guidance_scale=float("inf"))), "guidance_scale: inf is not a finite number"),
    ],
)
def test_each_bad_field_is_a_400_naming_it(server, payload, message):
    reply = post(server, payload)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


def test_other_methods_are_405(server):
    reply = requests.get(f"{server}/bg-replace", timeout=30)
    assert reply.status_code == 405 and reply.headers["Allow"] == "POST" and "use POST" in reply.json()["error"]
    assert requests.delete(f"{server}/bg-replace", timeout=30).status_code == 405


def test_bodies_over_the_limit_are_413(server, monkeypatch):
    monkeypatch.setenv("BACKDROP_MAX_BODY_MB", "0.5")
    reply = post(server, body(prompt="x" * 1_000_000))
    assert reply.status_code == 413 and "limit is 0.5 MB" in reply.json()["error"]


class _Images(BaseHTTPRequestHandler):
    """Serves the product at /product.jpg and redirects /to?u=... to u."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/to?u="):
            self.send_response(302)
            self.send_header("Location", unquote(self.path[len("/to?u="):]))
            self.end_headers()
            return
        data = PRODUCT.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def trusted_image_host(monkeypatch):
    """An image server on 127.0.0.2, the one address the server is told to trust for this test."""
    monkeypatch.setenv("BACKDROP_ALLOW_URLS", "1")
    monkeypatch.setenv("BACKDROP_URL_ALLOW_NETWORKS", "127.0.0.2/32")
    with host_on_127_0_0_2(_Images) as url:
        yield url


@pytest.mark.slow
def test_urls_are_fetched_from_public_or_trusted_hosts(server, trusted_image_host):
    assert post(server, body(image=f"{trusted_image_host}/product.jpg")).status_code == 200


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/product.jpg", "http://10.0.0.1/product.jpg",
                                    "http://[::1]:{port}/product.jpg", "http://169.254.169.254/latest/meta-data"])
def test_urls_to_loopback_private_and_link_local_addresses_are_refused(server, trusted_image_host, target):
    port = trusted_image_host.rsplit(":", 1)[1]
    url = target.format(port=port)
    direct = post(server, body(image=url))
    assert direct.status_code == 400 and "only public addresses are fetched" in direct.json()["error"]
    redirected = post(server, body(image=f"{trusted_image_host}/to?u={url}"))
    assert redirected.status_code == 400 and "only public addresses are fetched" in redirected.json()["error"]


@pytest.mark.slow
def test_eight_concurrent_requests_never_share_the_gpu(server, monkeypatch):
    import pipeline.backends.local.backend

    spans, real_denoise = [], pipeline.backends.local.backend._denoise

    def timed_denoise(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_denoise(*args, **kwargs)
        finally:
            spans.append((start, time.perf_counter()))

    monkeypatch.setattr(pipeline.backends.local.backend, "_denoise", timed_denoise)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda seed: post(server, body(seed=seed, strength=0.2)), range(8)))
    assert [reply.status_code for reply in replies] == [200] * 8
    assert len({reply.content for reply in replies}) == 8  # eight different seeds, eight different images
    spans.sort()
    assert len(spans) == 8 and all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    health = requests.get(f"{server}/health", timeout=30).json()
    assert health["queue"]["running"] == 0 and health["models_loaded"] is True


@pytest.mark.slow
def test_a_full_queue_answers_503_with_retry_after(server, monkeypatch):
    from pipeline.workflows.queue import gpu_queue

    monkeypatch.setattr(gpu_queue, "_max_waiting", 1)  # the number itself: restoring it keeps "read when asked"
    with ThreadPoolExecutor(2) as pool:
        with gpu_queue.slot():  # the GPU is busy
            waiting = pool.submit(post, server, body())
            while gpu_queue.stats()["waiting"] < 1:
                time.sleep(0.05)
            refused = post(server, body())
        assert waiting.result().status_code == 200
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "15"
    assert "busy" in refused.json()["error"]


def test_unexpected_failures_are_500_with_a_request_id_and_no_trace(server, monkeypatch, caplog):
    import pipeline.backends.local.backend

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail that must stay in the log")

    monkeypatch.setattr(pipeline.backends.local.backend, "generate_local", broken)
    caplog.set_level(logging.ERROR, logger="backdrop.rest")
    reply = post(server, body())
    data = reply.json()
    assert reply.status_code == 500 and len(data["request_id"]) == 12
    assert "internal detail" not in reply.text and "Traceback" not in reply.text
    assert data["request_id"] in caplog.text and "internal detail" in caplog.text
    assert requests.get(f"{server}/health", timeout=30).status_code == 200


def test_health_and_openapi_docs(server):
    health = requests.get(f"{server}/health", timeout=30).json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["model_set"] == "tiny"
    assert set(health["queue"]) == {"waiting", "running", "max_waiting"}
    spec = requests.get(f"{server}/openapi.json", timeout=30).json()
    schema = spec["paths"]["/bg-replace"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["image", "ref_image", "prompt"]
    assert schema["properties"]["cn_weight"] == {"type": "number", "description": "ControlNet (canny) weight.",
                                                 "minimum": 0.0, "maximum": 1.0, "default": 0.9}
    assert requests.get(f"{server}/docs", timeout=30).status_code == 200


def test_open_host_without_keys_warns(monkeypatch, caplog):
    from fastapi import FastAPI

    from pipeline.interfaces.rest import mount_rest
    from pipeline.workflows.queue import GenerationQueue

    monkeypatch.delenv("BACKDROP_API_KEYS", raising=False)
    caplog.set_level(logging.WARNING, logger="backdrop.rest")
    mount_rest(FastAPI(), model_set="tiny", queue=GenerationQueue(1), host="0.0.0.0")
    assert "without BACKDROP_API_KEYS" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_a_node_client_gets_an_image(server, tmp_path):
    out = tmp_path / "node.jpg"
    done = subprocess.run(["node", str(ROOT / "tests" / "clients" / "bg_replace.mjs"), f"{server}/bg-replace",
                           str(PRODUCT), str(SCENE), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("200 image/jpeg 5") and Image.open(out).size == Image.open(PRODUCT).size
