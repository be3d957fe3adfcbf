"""The REST endpoint on Ray Serve (python -m pipeline serve --ray): the studio's own /v1 routes in a Serve
replica, on the shared local Ray runtime, tiny models and the real u2netp. The README's JavaScript example
(axios) runs against it unchanged but for the address."""

from __future__ import annotations

import io
import base64
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from servers import free_port
from test_readme import KEY, PHOTO_SIZES, as_written, assert_result, axios, photos, reader_dir, readme_block, run  # noqa: F401

TIMEOUT = 300  # 2 cores shared with other work: a tiny generation can take a while


@pytest.fixture(scope="module")
def serve_url(ray_runtime, u2netp_home):
    from ray import serve

    from pipeline.interfaces.serve_ray import ServeOptions, start_serving
    from pipeline.workflows.ray_cluster import forwarded_env

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BACKDROP_MASK_MODEL", "u2netp")
        patch.setenv("BACKDROP_API_KEYS", KEY)
        options = ServeOptions(model_set="tiny", port=free_port(), host="127.0.0.1", env=forwarded_env())
    url = start_serving(options)
    yield url
    serve.shutdown()


def post(url: str, body: dict, key: str = KEY) -> requests.Response:
    return requests.post(f"{url}/v1/bg-replace", json=body, headers={"x-api-key": key}, timeout=TIMEOUT)


def small_body(reader_dir, **fields) -> dict:
    product = Image.open(reader_dir / "assets/product-perfume.jpg")
    product.thumbnail((300, 400))
    encoded = io.BytesIO()
    product.save(encoded, "JPEG")
    reference = base64.b64encode((reader_dir / "assets/scene-jungle.jpg").read_bytes()).decode()
    return {"image": base64.b64encode(encoded.getvalue()).decode(), "ref_image": reference,
            "prompt": "perfume bottle on a mossy rock", "resolution": 64, "num_inference_steps": 20} | fields


def test_the_readme_javascript_example_gets_a_jpeg(serve_url, reader_dir, axios):
    code = as_written(readme_block("javascript", "/v1/bg-replace"), serve_url)
    (reader_dir / "bg_replace.js").write_text(code)
    result = run(["node", "bg_replace.js"], reader_dir, BACKDROP_API_KEY=KEY, NODE_PATH=str(axios))
    assert result.stdout.strip() == "seed 42"
    assert_result(reader_dir / "result.jpg", PHOTO_SIZES["assets/product-perfume.jpg"])


def test_a_bad_seed_is_a_400_naming_the_field(serve_url, reader_dir):
    reply = post(serve_url, small_body(reader_dir, seed="forty-two"))
    assert reply.status_code == 400
    assert reply.json()["field"] == "seed" and "forty-two" in reply.json()["error"]


def test_keys_are_checked_as_by_the_studio(serve_url, reader_dir):
    assert post(serve_url, small_body(reader_dir), key="wrong").status_code == 401
    assert requests.get(f"{serve_url}/v1/health", timeout=TIMEOUT).json() == {"status": "ok"}
    health = requests.get(f"{serve_url}/v1/health", headers={"x-api-key": KEY}, timeout=TIMEOUT).json()
    assert health["model_set"] == "tiny" and health["models_loaded"]


def test_two_requests_at_once_each_get_their_own_image(serve_url, reader_dir):
    bodies = [small_body(reader_dir, seed=seed) for seed in (7, 8)]
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda body: post(serve_url, body), bodies))
    assert [reply.status_code for reply in replies] == [200, 200]
    assert [reply.headers["x-seeds"] for reply in replies] == ["7", "8"]
    images = [Image.open(io.BytesIO(reply.content)) for reply in replies]
    assert all(image.format == "JPEG" and image.size == (300, 400) for image in images)
    assert images[0].tobytes() != images[1].tobytes()  # two seeds, two backgrounds: not one reply twice
