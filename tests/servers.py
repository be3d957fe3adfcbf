"""Live servers for tests: a free port, a running studio (with its REST endpoint) and JSON posts to it."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any, Iterator

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


def post_json(url: str, payload: Any, **kwargs: Any) -> requests.Response:
    """POST ``payload`` (a dict is sent as JSON; bytes or text as they are) with a JSON content type."""
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    headers = {"Content-Type": "application/json"} | kwargs.pop("headers", {})
    return requests.post(url, data=data, headers=headers, timeout=300, **kwargs)
