"""The REST endpoint on Ray Serve (python -m pipeline serve --ray): the studio's own /v1 routes in a Serve
replica, on the shared local Ray runtime, tiny models and the real u2netp. The README's JavaScript example
(axios) runs against it unchanged but for the address."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image
from servers import free_port
from test_readme import KEY, as_written, axios, clone_dir, readme_block, run  # noqa: F401

from pipeline.contract.errors import BackdropError

pytestmark = pytest.mark.slow  # a Ray runtime and its workers: minutes on 2 cores

TIMEOUT = 300  # 2 cores shared with other work: a tiny generation can take a while


@pytest.fixture(scope="module")
def serve_url(ray_runtime, u2netp_home):
    from ray import serve

    from pipeline.interfaces.serve_ray import ServeOptions, start_serving
    from pipeline.workflows.ray_cluster import forwarded_env

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BACKDROP_MASK_MODEL", "u2netp")
        patch.setenv("BACKDROP_API_KEYS", KEY)
        # One replica with both CPUs: torch's threads follow the replica's CPUs.
        options = ServeOptions(model_set="tiny", port=free_port(), host="127.0.0.1", cpus_per_replica=2,
                               env=forwarded_env())
    url = start_serving(options)
    yield url
    serve.shutdown()


def post(url: str, body: dict, key: str = KEY) -> requests.Response:
    return requests.post(f"{url}/v1/bg-replace", json=body, headers={"x-api-key": key}, timeout=TIMEOUT)


def small_body(folder, **fields) -> dict:
    product = Image.open(folder / "assets/product-perfume.jpg")
    product.thumbnail((300, 400))
    encoded = io.BytesIO()
    product.save(encoded, "JPEG")
    reference = base64.b64encode((folder / "assets/scene-jungle.jpg").read_bytes()).decode()
    return {"image": base64.b64encode(encoded.getvalue()).decode(), "ref_image": reference,
            "prompt": "perfume bottle on a mossy rock", "resolution": 64, "num_inference_steps": 20} | fields


def test_the_readme_javascript_example_gets_a_jpeg(serve_url, clone_dir, axios):
    """The README's axios example as written (the hosted API's body: image, ref_image, prompt, seed), on the
    repository's own pictures (tests/test_readme.py runs it on camera-size ones against the studio)."""
    code = as_written(readme_block("javascript", "/v1/bg-replace"), serve_url)
    (clone_dir / "bg_replace.js").write_text(code)
    result = run(["node", "bg_replace.js"], clone_dir, BACKDROP_API_KEY=KEY, NODE_PATH=str(axios))
    assert result.stdout.strip() == "seed 42"
    with Image.open(clone_dir / "result.jpg") as image, Image.open(clone_dir / "assets/product-perfume.jpg") as photo:
        assert image.format == "JPEG" and image.size == photo.size


def test_a_bad_seed_is_a_400_naming_the_field(serve_url, clone_dir):
    reply = post(serve_url, small_body(clone_dir, seed="forty-two"))
    assert reply.status_code == 400
    assert reply.json()["field"] == "seed" and "forty-two" in reply.json()["error"]


def test_keys_are_checked_as_by_the_studio(serve_url, clone_dir):
    assert post(serve_url, small_body(clone_dir), key="wrong").status_code == 401
    assert requests.get(f"{serve_url}/v1/health", timeout=TIMEOUT).json() == {"status": "ok"}
    health = requests.get(f"{serve_url}/v1/health", headers={"x-api-key": KEY}, timeout=TIMEOUT).json()
    assert health["model_set"] == "tiny" and health["models_loaded"]


def test_two_requests_at_once_each_get_their_own_image(serve_url, clone_dir):
    bodies = [small_body(clone_dir, seed=seed) for seed in (7, 8)]
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda body: post(serve_url, body), bodies))
    assert [reply.status_code for reply in replies] == [200, 200]
    assert [reply.headers["x-seeds"] for reply in replies] == ["7", "8"]
    images = [Image.open(io.BytesIO(reply.content)) for reply in replies]
    assert all(image.format == "JPEG" and image.size == (300, 400) for image in images)
    assert images[0].tobytes() != images[1].tobytes()  # two seeds, two backgrounds: not one reply twice


def test_ranges_and_a_missing_ray_flag_are_user_errors(capsys):
    from pipeline.interfaces.cli import main
    from pipeline.workflows.ray_cluster import parse_range

    assert parse_range("3", field_name="--replicas") == (3, 3)
    assert parse_range("1:4", field_name="--replicas") == (1, 4)
    for bad in ("0", "4:1", "two", "1:2:3", ""):
        with pytest.raises(BackdropError) as caught:
            parse_range(bad, field_name="--workers")
        assert caught.value.field == "--workers" and repr(bad) in str(caught.value)
    assert main(["serve", "--port", "8123"]) == 2
    assert "add --ray" in capsys.readouterr().err
    assert main(["batch", "shots", "--workers", "2", "--out", "x"]) == 2
    assert "--workers" in capsys.readouterr().err
