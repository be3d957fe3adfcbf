"""Issue 18: keys on every door, no drive-by use, and hostile input that ends in a sentence, not a 500."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from scenes import small_asset
from servers import host_on_127_0_0_2, post_json, running_studio

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = small_asset("product-ring.jpg")
SCENE = small_asset("scene-marble.jpg")
FAST = {"scheduler": "Euler", "num_inference_steps": 20, "resolution": 64, "mask_model": "u2netp", "seed": 3}
KEY = "door-key-123"


def body(**overrides):
    images = {"image": base64.b64encode(PRODUCT.read_bytes()).decode(),
              "ref_image": base64.b64encode(SCENE.read_bytes()).decode()}
    return images | {"prompt": "gold ring on marble"} | FAST | overrides


@pytest.fixture(scope="module")
def server(tmp_path_factory, u2netp_home, tiny_models):
    with running_studio(tmp_path_factory.mktemp("out")) as url:
        yield url


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("BACKDROP_API_KEYS", f"{KEY}, other-key")
    return KEY


# --- 1. keys on every door --------------------------------------------------------------------------------

@pytest.mark.slow
def test_with_keys_the_gradio_api_needs_x_api_key(server, keys):
    from gradio_client import Client, handle_file

    with pytest.raises(Exception):  # noqa: B017 (gradio_client raises its own, version-dependent, type on a 401)
        Client(f"{server}/", verbose=False)  # cannot even read the API's description
    assert requests.post(f"{server}/gradio_api/call/generate", json={"data": []}, timeout=30).status_code == 401
    assert requests.get(f"{server}/config", timeout=30).status_code == 401
    client = Client(f"{server}/", verbose=False, headers={"x-api-key": keys})
    gallery, *_ = client.predict(image=handle_file(str(PRODUCT)), ref_image=handle_file(str(SCENE)),
                                 prompt="gold ring on marble", num_inference_steps=20, scheduler="Euler",
                                 mask_model="u2netp", resolution=64, seed=5, api_name="/generate")
    assert len(gallery) == 1


@pytest.mark.slow
def test_with_keys_the_page_asks_for_one_and_the_right_key_opens_it(server, keys):
    page = requests.get(f"{server}/", headers={"Accept": "text/html"}, timeout=30)
    assert 'name="key"' in page.text and "gradio" not in page.text.lower()
    session = requests.Session()
    wrong = session.post(f"{server}/backdrop-key", data={"key": "guess"}, timeout=30)
    assert wrong.status_code == 401 and "not one this server accepts" in wrong.text
    right = session.post(f"{server}/backdrop-key", data={"key": keys}, timeout=30, allow_redirects=False)
    assert right.status_code == 303 and "SameSite=Strict" in right.headers["set-cookie"]
    assert keys not in right.headers["set-cookie"]  # a keyed hash, never the key itself
    assert session.get(f"{server}/config", timeout=30).status_code == 200


@pytest.mark.slow
def test_without_keys_every_door_is_open_as_before(server, monkeypatch):
    monkeypatch.delenv("BACKDROP_API_KEYS", raising=False)
    assert requests.get(f"{server}/config", timeout=30).status_code == 200
    assert "device" in requests.get(f"{server}/v1/health", timeout=30).json()


@pytest.mark.slow
def test_health_tells_strangers_only_that_the_server_is_up(server, keys):
    assert requests.get(f"{server}/v1/health", timeout=30).json() == {"status": "ok"}
    full = requests.get(f"{server}/v1/health", headers={"x-api-key": keys}, timeout=30).json()
    assert full["model_set"] == "tiny" and "loaded" in full


@pytest.mark.slow
def test_browser_asks_for_the_key_then_generates(browser, server, keys):
    from playwright.sync_api import expect
    from test_app import fill_inputs

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{server}/")
    page.locator("#key").fill("a-guess")
    page.locator("#enter_key").click()
    expect(page.get_by_text("not one this server accepts")).to_be_visible()
    page.locator("#key").fill(keys)
    page.locator("#enter_key").click()
    page.locator("#generate").wait_for(timeout=30_000)
    fill_inputs(page, "perfume bottle in a jungle")
    page.locator("#generate").click()
    expect(page.locator("#gallery .thumbnail-item")).to_have_count(2, timeout=120_000)


# --- 3. no drive-by generation from another site ----------------------------------------------------------

@pytest.mark.slow
def test_rest_accepts_json_only(server):
    text = requests.post(f"{server}/v1/bg-replace", data=json.dumps(body()), timeout=60,
                         headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "application/json" in text.json()["error"]
    form = requests.post(f"{server}/v1/bg-replace", data={"prompt": "x"}, timeout=60)
    assert form.status_code == 415
    assert post_json(f"{server}/v1/bg-replace", body()).status_code == 200


@pytest.mark.slow
def test_cross_origin_calls_to_rest_are_refused_unless_configured(server, monkeypatch):
    evil = {"Origin": "https://evil.example"}
    refused = post_json(f"{server}/v1/bg-replace", body(), headers=evil)
    assert refused.status_code == 403 and "BACKDROP_CORS_ORIGINS" in refused.json()["error"]
    assert "access-control-allow-origin" not in refused.headers
    monkeypatch.setenv("BACKDROP_CORS_ORIGINS", "https://shop.example")
    allowed = post_json(f"{server}/v1/bg-replace", body(), headers={"Origin": "https://shop.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert post_json(f"{server}/v1/bg-replace", body(), headers=evil).status_code == 403


# --- 5. deeply nested JSON --------------------------------------------------------------------------------

@pytest.mark.slow
def test_deeply_nested_json_is_a_400_not_a_500(server):
    deep = "[" * 100_000 + "]" * 100_000
    reply = post_json(f"{server}/v1/bg-replace", '{"prompt": ' + deep + "}")
    assert reply.status_code == 400 and "nested too deeply" in reply.json()["error"]
    parsed = post_json(f"{server}/v1/bg-replace", json.dumps(body(seed=json.loads("[" * 500 + "]" * 500))))
    assert parsed.status_code == 400 and parsed.json()["error"].startswith("seed:")


# --- 2. the server's hosted key is the operator's to lend ---------------------------------------------------

def studio_values(**overrides):
    from pipeline import FIELDS
    from pipeline.interfaces.studio.screen import REQUEST_INPUTS

    values = {name: FIELDS[name].default for name in REQUEST_INPUTS if name in FIELDS}
    return values | {"image": str(PRODUCT), "ref_image": str(SCENE), "prompt": "gold ring on marble",
                     "backend": "Hosted API", "api_key": "", "mask_model": "u2netp", "seed": 4} | overrides


def test_visitors_spend_the_servers_hosted_key_only_when_the_operator_lends_it(tmp_path, monkeypatch, u2netp_home):
    import gradio as gr
    from fake_segmind import FakeSegmind

    from pipeline.interfaces.studio.handlers import Studio

    with FakeSegmind(api_key="server-secret") as service:
        monkeypatch.setenv("SEGMIND_API_URL", service.url)
        monkeypatch.setenv("SEGMIND_API_KEY", "server-secret")
        monkeypatch.delenv("BACKDROP_STUDIO_SERVER_KEY", raising=False)
        studio = Studio("tiny", tmp_path)
        with pytest.raises(gr.Error, match=r"Hosted API key \(api_key\): enter your own hosted API key"
                                           r".*BACKDROP_STUDIO_SERVER_KEY=1"):
            studio.generate(studio_values(), request=None, progress=None)
        assert service.requests == []
        monkeypatch.setenv("SEGMIND_API_KEY", "wrong-server-key")  # the visitor's own key is used, not the server's
        service.api_key = "visitor-key"
        studio.generate(studio_values(api_key="visitor-key"), request=None, progress=None)
        monkeypatch.setenv("SEGMIND_API_KEY", "server-secret")
        service.api_key = "server-secret"
        monkeypatch.setenv("BACKDROP_STUDIO_SERVER_KEY", "1")
        studio.generate(studio_values(), request=None, progress=None)
        monkeypatch.delenv("BACKDROP_STUDIO_SERVER_KEY")
        studio.only_this_machine = True  # a studio on 127.0.0.1 without --share: the visitor is the operator
        studio.generate(studio_values(), request=None, progress=None)
        assert [seen["headers"]["x-api-key"] for seen in service.requests] == ["visitor-key", "server-secret",
                                                                               "server-secret"]


# --- 5, 6. Load settings and Compare's A/B settings ----------------------------------------------------------

def test_load_settings_and_ab_settings_answer_deep_json_with_the_field(tmp_path):
    import gradio as gr

    from pipeline import BackdropError, BgReplaceRequest
    from pipeline.interfaces.studio.handlers import load_settings
    from pipeline.interfaces.studio.values import overrides

    sidecar = tmp_path / "deep.json"
    sidecar.write_text('{"request": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(gr.Error, match=r"Settings file \(settings\): the JSON is nested too deeply"):
        load_settings(str(sidecar))
    base = BgReplaceRequest(image=PRODUCT, ref_image=SCENE, prompt="x")
    with pytest.raises(BackdropError, match="settings_a: the JSON is nested too deeply"):
        overrides(base, "[" * 100_000, "settings_a")


@pytest.mark.parametrize(("seed", "message"), [(10**30,
                                                r"Seed \(seed\): 1000000000000000000000000000000 is out of range"),
                                               (-5, r"Seed \(seed\): -5 is out of range"),
                                               (True, r"Seed \(seed\): True is a bool, not a number")])
def test_load_settings_checks_the_seed_like_a_request(tmp_path, seed, message):
    import gradio as gr

    from pipeline.interfaces.studio.handlers import load_settings

    sidecar = tmp_path / "result.json"
    sidecar.write_text(json.dumps({"request": {"prompt": "x", "seed": -1}, "seeds": [1], "index": 0, "seed": seed}))
    with pytest.raises(gr.Error, match=message):
        load_settings(str(sidecar))


# --- 4. the hosted key stays with the hosted service ---------------------------------------------------------

class _Redirector(BaseHTTPRequestHandler):
    target = ""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirector():
    host = ThreadingHTTPServer(("127.0.0.2", 0), _Redirector)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield host
    host.shutdown()
    host.server_close()


def test_the_hosted_key_never_follows_a_redirect_to_another_host(redirector, make_request):
    from fake_segmind import FakeSegmind

    from pipeline.backends.hosted import HostedAPIError, HostedSettings, generate_hosted

    with FakeSegmind(api_key="sk-hosted-secret") as elsewhere:
        _Redirector.target = elsewhere.url
        settings = HostedSettings(url=f"http://127.0.0.2:{redirector.server_address[1]}/v1/bg-replace",
                                  api_key="sk-hosted-secret", timeout=5, backoff=0.01)
        with pytest.raises(HostedAPIError, match=r"redirected to another host \(http://127.0.0.1:\d+\); the key is "
                                                 r"not sent there.*SEGMIND_API_URL"):
            generate_hosted(make_request(), settings=settings)
        assert elsewhere.requests == []


def test_a_service_error_quoting_the_key_is_masked_before_it_is_shortened(make_request):
    from fake_segmind import FakeSegmind

    from pipeline.backends.hosted import HostedAPIError, HostedSettings, generate_hosted

    secret = "sk-live-0123456789abcdef"
    with FakeSegmind(api_key=secret) as service:
        service.script = [400]
        service.error_body = {"error": "x" * 290 + " " + secret}  # the key straddles the 300-character cut
        with pytest.raises(HostedAPIError) as caught:
            generate_hosted(make_request(), settings=HostedSettings(url=service.url, api_key=secret, timeout=5))
    assert secret[:6] not in str(caught.value) and "***" in str(caught.value)


# --- 7. a URL image host that trickles or breaks off ---------------------------------------------------------

class _BadImageHost(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        if self.path == "/trickle.jpg":
            try:
                for _ in range(40):  # one byte every 0.25 s: each read succeeds, the whole never arrives
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.25)
            except OSError:
                pass  # Backdrop hung up, as it should
        else:
            self.wfile.write(PRODUCT.read_bytes()[:5000])  # then the connection closes: 95 kB short


@pytest.fixture
def bad_image_host(monkeypatch):
    monkeypatch.setenv("BACKDROP_ALLOW_URLS", "1")
    monkeypatch.setenv("BACKDROP_URL_ALLOW_NETWORKS", "127.0.0.2/32")
    with host_on_127_0_0_2(_BadImageHost) as url:
        yield url


@pytest.mark.slow
def test_a_trickling_image_host_is_cut_off_at_the_whole_download_limit(server, bad_image_host, monkeypatch):
    from pipeline.interfaces import fetch

    monkeypatch.setattr(fetch, "TOTAL_TIMEOUT", 2.0)
    started = time.monotonic()
    reply = post_json(f"{server}/v1/bg-replace", body(image=f"{bad_image_host}/trickle.jpg"))
    assert reply.status_code == 400 and reply.json()["error"] == "image: fetching the image took longer than 2 s"
    assert time.monotonic() - started < 6


@pytest.mark.slow
def test_a_download_cut_short_is_a_400_naming_the_field(server, bad_image_host):
    reply = post_json(f"{server}/v1/bg-replace", body(ref_image=f"{bad_image_host}/short.jpg"))
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("ref_image: the download broke off after 5000 bytes")


# --- 8. --out that is a file ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["batch"]])
def test_out_pointing_at_a_file_is_refused_before_any_work(tmp_path, command):
    import subprocess
    import sys

    taken = tmp_path / "results.jpg"
    taken.write_bytes(b"not a folder")
    image = ["--image", str(PRODUCT)] if not command else [str(PRODUCT.parent)]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline", *command, *image, "--ref", str(SCENE), "--prompt", "x",
                           "--model-set", "tiny", "--out", str(taken / "sub" if command else taken)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("backdrop: error: --out: ") and "a file; give a folder" in done.stderr
    assert "[load]" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert taken.read_bytes() == b"not a folder" and time.monotonic() - started < 60


# --- 9. preset names -------------------------------------------------------------------------------------------

def test_long_and_colliding_preset_names_get_a_message_never_an_overwrite(tmp_path, monkeypatch):
    import gradio as gr

    from pipeline.interfaces.studio.handlers import save_preset
    from pipeline.interfaces.studio.screen import SETTING_INPUTS
    from pipeline.workflows.presets import get_preset, save_user_preset

    monkeypatch.setenv("BACKDROP_PRESETS_DIR", str(tmp_path))
    with pytest.raises(gr.Error,
                       match=r"Name for a new preset \(preset_name\): 300 characters is too long; at most 80"):
        save_preset("shoe" * 75, *[None] * len(SETTING_INPUTS))
    save_user_preset("My Shoes", {"cn_weight": 0.8})
    with pytest.raises(Exception, match=r"preset_name: 'my shoes' would be saved as my-shoes.json, which already "
                                        r"holds the preset 'My Shoes'; choose another name"):
        save_user_preset("my shoes", {"cn_weight": 0.3})
    assert get_preset("my-shoes").settings["cn_weight"] == 0.8
    save_user_preset("My Shoes", {"cn_weight": 0.7})  # the same name again updates it
    assert get_preset("my-shoes").settings["cn_weight"] == 0.7
