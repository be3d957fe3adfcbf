"""Live servers for tests: a free port, a running studio (with its REST endpoint) and JSON posts to it."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_studio(output_dir: Path, model_set: str = "tiny") -> Iterator[str]:
    """``app.launch_studio`` on a free port; yields its base URL (no trailing slash) and closes it after."""
    import app

    port = free_port()
    demo = app.launch_studio(port=port, model_set=model_set, output_dir=output_dir, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


@contextlib.contextmanager
def studio_page(output_dir: Path, model_set: str = "tiny") -> Iterator[str]:
    """The studio's Blocks alone (no REST endpoint) on a free port; yields its URL (with the trailing slash)."""
    import app
    from pipeline.interfaces.studio.launch import UPLOAD_JS

    demo = app.build_demo(model_set=model_set, output_dir=output_dir)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(output_dir)], js=UPLOAD_JS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def host_on_127_0_0_2(handler: type) -> Iterator[str]:
    """An HTTP server answering with ``handler`` on 127.0.0.2 (a loopback address the tests can tell the
    server to trust with BACKDROP_URL_ALLOW_NETWORKS); yields its base URL."""
    import threading
    from http.server import ThreadingHTTPServer

    host = ThreadingHTTPServer(("127.0.0.2", 0), handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.2:{host.server_address[1]}"
    finally:
        host.shutdown()
        host.server_close()


def post_json(url: str, payload: Any, **kwargs: Any) -> requests.Response:
    """POST ``payload`` (a dict is sent as JSON; bytes or text as they are) with a JSON content type."""
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    headers = {"Content-Type": "application/json"} | kwargs.pop("headers", {})
    return requests.post(url, data=data, headers=headers, timeout=300, **kwargs)
