"""A stand-in for the hosted bg-replace API on 127.0.0.1, checking requests against SPEC §1's contract.

Tests script its answers (``script``: status codes to give before succeeding) and read what it saw.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

PATH = "/v1/bg-replace"
SPEC_FIELDS = {"image", "ref_image", "prompt", "negative_prompt", "samples", "scheduler", "num_inference_steps",
               "guidance_scale", "seed", "strength", "cn_weight", "ip_adapter_weight", "base64"}


class FakeSegmind:
    def __init__(self, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.script: list[int] = []  # statuses to answer first, in order; then 200
        self.error_body: dict[str, Any] | None = None
        self.reply_json = False
        self.delay = 0.0
        self.credits = 100.0
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0  # the most calls it was answering at once
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"

    def __enter__(self) -> FakeSegmind:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                self._send_json(405, {"error": "Method Not Allowed"})

            def do_POST(self) -> None:
                with fake.lock:
                    fake.in_flight += 1
                    fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
                try:
                    self._answer()
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    scripted = fake.script.pop(0) if fake.script else None
                if fake.delay:
                    time.sleep(fake.delay)
                if self.path != PATH:
                    return self._send_json(404, {"error": "Not Found"})
                if self.headers.get("x-api-key") != fake.api_key:
                    return self._send_json(401, {"error": "Invalid API key"})
                if scripted is not None:
                    return self._send_json(scripted, fake.error_body or {"error": f"scripted {scripted}"})
                problem = _check_body(body)
                if problem:
                    return self._send_json(400, {"error": problem})
                fake._succeed(self, json.loads(body))

            def _send_json(self, status: int, data: dict[str, Any]) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def _succeed(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        product = Image.open(io.BytesIO(base64.b64decode(body["image"])))
        shade = int(body["seed"]) * 37 % 200  # each seed its own background, so tests can tell calls apart
        buffer = io.BytesIO()
        Image.new("RGB", product.size, (shade, 120, 200 - shade)).save(buffer, format="JPEG")
        with self.lock:
            self.credits -= 1
            credits = self.credits
        if self.reply_json:
            payload = json.dumps({"status": "ok", "image": base64.b64encode(buffer.getvalue()).decode()}).encode()
            content_type = "application/json"
        else:
            payload, content_type = buffer.getvalue(), "image/jpeg"
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("x-remaining-credits", f"{credits:g}")
        handler.end_headers()
        handler.wfile.write(payload)


def _check_body(raw: bytes) -> str | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return "body is not JSON"
    if set(body) != SPEC_FIELDS:
        return f"fields differ from the contract: {sorted(set(body) ^ SPEC_FIELDS)}"
    for name in ("image", "ref_image"):
        try:
            Image.open(io.BytesIO(base64.b64decode(body[name], validate=True))).load()
        except Exception:
            return f"{name} is not a base64 image"
    return None
