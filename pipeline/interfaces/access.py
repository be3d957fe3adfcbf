"""Keys on every door: with BACKDROP_API_KEYS set, the studio page, its Gradio API and the REST endpoint
all need one, and cross-origin browser requests to ``/v1`` are refused unless BACKDROP_CORS_ORIGINS names
the origin.

Scripts send the key as ``x-api-key`` (``gradio_client.Client(url, headers={"x-api-key": KEY})``, or any
HTTP client for ``/v1``). A browser gets a page asking for the key; the right key sets a cookie that holds
a keyed hash of it (never the key), ``HttpOnly`` and ``SameSite=Strict`` so another site's page cannot
spend it. The REST app checks keys itself (its own 401 text), and ``/v1/health`` answers strangers with
``{"status": "ok"}`` only.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline.contract.settings import setting
from pipeline.interfaces.rest import api_keys, is_one_of

COOKIE = "backdrop_key"
LOGIN_PATH = "/backdrop-key"
# Gradio's launch() calls this on its own server before returning; it only runs start-up hooks, once.
OPEN_PATHS = ("/gradio_api/startup-events",)
MAX_FORM_BYTES = 4096
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def cors_origins() -> set[str]:
    """BACKDROP_CORS_ORIGINS: comma-separated origins (``https://shop.example``) whose pages may call /v1."""
    return {origin.rstrip("/") for origin in setting("BACKDROP_CORS_ORIGINS")}


class KeyGuard:
    """ASGI middleware for the studio's server app (passed to Gradio through ``launch(app_kwargs=...)``)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self._secret = secrets.token_bytes(32)  # cookies die with the process: a restart asks again

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path = scope.get("path", "")
        if path == "/v1" or path.startswith("/v1/"):
            await self._rest(scope, receive, send, headers)
            return
        keys = api_keys()
        if not keys or path in OPEN_PATHS or self._has_key(keys, headers):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        elif path.endswith(LOGIN_PATH) and scope["method"] == "POST":
            await self._log_in(keys, receive, send)
        elif scope["method"] in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
            await _respond(send, 200, _login_page(), "text/html; charset=utf-8")
        else:
            message = ("this server needs a key: send it in the x-api-key header (gradio_client: "
                       "Client(url, headers={'x-api-key': KEY}))")
            await _respond(send, 401, json.dumps({"error": message}).encode(), "application/json")

    async def _rest(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """``/v1`` checks its own keys; here only the origin: a page on another site may not call it."""
        origin = headers.get("origin", "").rstrip("/")
        if not origin or _same_origin(origin, headers) or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if origin not in cors_origins():
            message = (f"cross-origin requests from {origin} are not allowed; the operator can list trusted "
                       "origins in BACKDROP_CORS_ORIGINS")
            await _respond(send, 403, json.dumps({"error": message}).encode(), "application/json")
            return

        async def allow_origin(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(name, value) for name, value in message.get("headers", [])
                                      if not name.lower().startswith(b"access-control-allow-origin")]
                message["headers"] += [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
            await send(message)

        await self.app(scope, receive, allow_origin)

    def _token(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def _has_key(self, keys: set[str], headers: dict[str, str]) -> bool:
        given = headers.get("x-api-key", "")
        if given and is_one_of(given, keys):
            return True
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE, "")
        return bool(cookie) and any(hmac.compare_digest(cookie, self._token(key)) for key in keys)

    async def _log_in(self, keys: set[str], receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES or not message.get("more_body"):
                break
        given = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")).get("key", [""])[0].strip()
        if not is_one_of(given, keys):
            await _respond(send, 401, _login_page("That key is not one this server accepts."),
                           "text/html; charset=utf-8")
            return
        cookie = f"{COOKIE}={self._token(given)}; Path=/; HttpOnly; SameSite=Strict"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"./"), (b"set-cookie", cookie.encode()), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    return dict(pairs)


def _same_origin(origin: str, headers: dict[str, str]) -> bool:
    """The page's origin is this server (as the browser reached it, also through a proxy)."""
    netloc = urlsplit(origin).netloc.lower()
    return netloc in {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").lower()} - {""}


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def _login_page(problem: str = "") -> bytes:
    note = f'<p class="problem">{html.escape(problem)}</p>' if problem else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Backdrop: key needed</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:15vh auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;margin:.5rem 0;box-sizing:border-box}}button{{padding:.5rem 1rem}}
.problem{{color:#b00020}}</style></head>
<body><h1>Backdrop</h1><p>This studio needs a key. Ask the person who runs it for one.</p>{note}
<form method="post" action="{LOGIN_PATH.lstrip('/')}"><label for="key">Key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit" id="enter_key">Open the studio</button></form></body></html>
""".encode()
