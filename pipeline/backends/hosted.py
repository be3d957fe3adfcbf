"""The hosted backend: the same request sent to the bg-replace API instead of the local GPU (README,
"Hosted API backend").

The product is still found and laid back locally, so a hosted result keeps the product's own pixels at
the photo's own resolution, exactly like a local one.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from PIL import Image

from pipeline.contract.errors import BackdropError, GenerationCancelled
from pipeline.contract.images import decode_image_bytes, encode_image
from pipeline.contract.request import HOSTED_FIELDS, BgReplaceRequest
from pipeline.contract.result import BgReplaceResult, CancelCheck, Progress, ProgressCallback
from pipeline.contract.settings import setting, setting_default
from pipeline.stages.prepare import PreparedInputs, finish_result, resolve_seeds
from pipeline.stages.reuse import Reuse

log = logging.getLogger("backdrop.hosted")

DEFAULT_TIMEOUT = setting_default("BACKDROP_HOSTED_TIMEOUT")
MAX_ATTEMPTS = 3
MAX_REDIRECTS = 3
HOSTED_SIDE = 1024  # what we send: about the megapixel the service generates at, not a 24 MP original
TOP_UP_URL = "https://cloud.segmind.com"
_RETRIED = {429, 500, 502, 503, 504}

_STATUS_MESSAGES = {
    400: "the hosted API rejected the request (400 bad request)",
    401: "the hosted API refused the key (401 unauthorized): check SEGMIND_API_KEY or the key you entered",
    403: "the hosted API denied access (403 forbidden): this key may not be allowed to use bg-replace",
    404: "the hosted API address was not found (404): check SEGMIND_API_URL ({url})",
    405: "the hosted API does not accept POST at {url} (405 method not allowed): check SEGMIND_API_URL",
    406: f"the hosted account has not enough credits (406): top up at {TOP_UP_URL} and try again",
    429: "the hosted API is rate limiting this key (429 too many requests): wait a minute and try again",
    500: "the hosted API failed with an internal error (500): try again later",
    502: "the hosted API's gateway could not reach the service (502 bad gateway): try again later",
    503: "the hosted API is unavailable (503): try again later",
    504: "the hosted API's gateway timed out (504 gateway timeout): try again later",
}


class HostedAPIError(BackdropError):
    """The hosted service failed or refused; not the request's fault (CLI exit 1, HTTP 502)."""

    exit_code = 1
    http_status = 502

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        self.status = status
        self.attempts = attempts
        super().__init__(message)


@dataclass(frozen=True)
class HostedSettings:
    """Where and how to call the service. ``repr`` never shows the key."""

    url: str
    api_key: str
    timeout: float = DEFAULT_TIMEOUT
    backoff: float = 1.0  # seconds before the 2nd attempt; doubled before the 3rd

    def __repr__(self) -> str:
        return f"HostedSettings(url={self.url!r}, api_key='***', timeout={self.timeout})"


def hosted_settings(api_key: str | None = None, url: str | None = None, timeout: float | None = None) -> HostedSettings:
    """Arguments first, then SEGMIND_API_KEY / SEGMIND_API_URL / BACKDROP_HOSTED_TIMEOUT."""
    key = (api_key or setting("SEGMIND_API_KEY") or "").strip()
    if not key:
        raise BackdropError("the hosted API needs a key: set SEGMIND_API_KEY or enter your key", field="api_key")
    address = (url or setting("SEGMIND_API_URL")).strip()
    if not address.startswith(("http://", "https://")):
        raise BackdropError(f"{address!r} is not an http(s) URL", field="SEGMIND_API_URL")
    seconds = timeout if timeout is not None else setting("BACKDROP_HOSTED_TIMEOUT")
    return HostedSettings(url=address, api_key=key, timeout=seconds, backoff=setting("BACKDROP_HOSTED_BACKOFF"))


def request_body(request: BgReplaceRequest, prepared: PreparedInputs, seed: int) -> dict[str, Any]:
    """The JSON body: exactly the hosted API's field names (README, "The request"), one sample, images as base64."""
    values = {name: getattr(request, name) for name in HOSTED_FIELDS}
    values.update(
        image=_b64(encode_image(prepared.image, "jpeg")),
        ref_image=_b64(encode_image(_fit(request.ref_image, HOSTED_SIDE), "jpeg")),
        samples=1,  # the service answers one image per call: one call per sample, each with its own seed
        seed=seed,
        base64=False,
    )
    return values


def generate_hosted(
    request: BgReplaceRequest,
    *,
    settings: HostedSettings | None = None,
    api_key: str | None = None,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    reuse: Reuse | None = None,
) -> BgReplaceResult:
    """Send ``request`` to the hosted API (one call per sample, seeds seed, seed+1, ...)."""
    if request.detail > 0:
        raise BackdropError(f"{request.detail:g} asks for the detail pass, which runs only on the local backend; "
                            "use detail 0 with the hosted API, or the local backend", field="detail")
    settings = settings or hosted_settings(api_key)
    report = on_progress or (lambda progress: None)
    started = time.perf_counter()
    report(Progress("mask", 0.0, "Finding the product"))
    prepared = (reuse or Reuse()).prepare(request, HOSTED_SIDE)
    timings = {"prepare": time.perf_counter() - started}

    seeds = resolve_seeds(request.seed, request.samples)
    backgrounds, credits, attempts = [], None, 0
    stage_start = time.perf_counter()
    for index, seed in enumerate(seeds):
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("generation was cancelled")
        report(Progress("denoise", index / len(seeds), f"Hosted API: image {index + 1}/{len(seeds)}"))
        reply = call_hosted(settings, request_body(request, prepared, seed))
        backgrounds.append(reply.image)
        credits = reply.remaining_credits if reply.remaining_credits is not None else credits
        attempts += reply.attempts
    report(Progress("denoise", 1.0, f"Hosted API: {len(seeds)} image(s) received"))
    timings["generate"] = time.perf_counter() - stage_start

    return finish_result(request, prepared, backgrounds, seeds, timings=timings, started=started, backend="hosted",
                         info={"url": settings.url, "remaining_credits": credits, "calls": len(seeds),
                               "attempts": attempts, "generation_size": list(backgrounds[0].size)})


@dataclass(frozen=True)
class HostedReply:
    image: Image.Image
    remaining_credits: float | None
    attempts: int


def call_hosted(settings: HostedSettings, body: dict[str, Any]) -> HostedReply:
    """POST ``body``; retry 429, 5xx and connection failures (3 attempts, backing off), nothing else."""
    import requests

    payload = json.dumps(body).encode("utf-8")
    headers = {"x-api-key": settings.api_key, "Content-Type": "application/json", "Accept": "image/*, application/json"}
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = _post_same_host(settings, payload, headers)
        except requests.Timeout:
            raise HostedAPIError(
                f"the hosted API did not answer within {settings.timeout:g} s (BACKDROP_HOSTED_TIMEOUT)",
                attempts=attempt,
            ) from None
        except requests.RequestException as exc:
            if attempt == MAX_ATTEMPTS:
                raise HostedAPIError(
                    f"could not reach the hosted API at {settings.url} after {attempt} attempts "
                    f"({type(exc).__name__}); check your network and SEGMIND_API_URL",
                    attempts=attempt,
                ) from None
            _wait_before_retry(settings, attempt, None, f"connection failed ({type(exc).__name__})")
            continue
        if response.status_code == 200:
            return HostedReply(_reply_image(response), _credits(response), attempt)
        if response.status_code in _RETRIED and attempt < MAX_ATTEMPTS:
            _wait_before_retry(settings, attempt, response.headers.get("Retry-After"), f"HTTP {response.status_code}")
            continue
        raise _status_error(settings, response, attempt)
    raise AssertionError("unreachable")  # the loop always returns or raises


def _post_same_host(settings: HostedSettings, payload: bytes, headers: dict[str, str]) -> Any:
    """POST, following redirects by hand and only within the service's own host: the key is never sent to
    another one (requests would carry ``x-api-key`` along a 307 to anywhere)."""
    import requests

    url = settings.url
    for _ in range(MAX_REDIRECTS + 1):
        response = requests.post(url, data=payload, headers=headers, timeout=settings.timeout, allow_redirects=False)
        if response.status_code not in (301, 302, 303, 307, 308) or not response.headers.get("Location"):
            return response
        target = urljoin(url, response.headers["Location"])
        if _origin(target) != _origin(settings.url):
            raise HostedAPIError(
                f"the hosted API at {settings.url} redirected to another host ({_origin(target)}); the key is "
                "not sent there. If that is the service's new address, set SEGMIND_API_URL to it",
                status=response.status_code)
        url = target
    raise HostedAPIError(f"the hosted API at {settings.url} redirected more than {MAX_REDIRECTS} times")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _wait_before_retry(settings: HostedSettings, attempt: int, retry_after: str | None, why: str) -> None:
    delay = settings.backoff * 2 ** (attempt - 1)
    if retry_after and retry_after.strip().isdigit():
        delay = min(max(delay, float(retry_after)), 30.0)
    log.info("hosted API attempt %d/%d: %s; retrying in %.1f s", attempt, MAX_ATTEMPTS, why, delay)
    time.sleep(delay)


def _status_error(settings: HostedSettings, response: Any, attempts: int) -> HostedAPIError:
    status = response.status_code
    message = _STATUS_MESSAGES.get(status, f"the hosted API answered HTTP {status}").format(url=settings.url)
    detail = _service_error_text(response, settings.api_key)
    if detail:
        message += f". The service said: {detail}"
    if attempts > 1:
        message += f" ({attempts} attempts)"
    return HostedAPIError(message, status=status, attempts=attempts)


def _service_error_text(response: Any, api_key: str) -> str:
    """The service's own ``error`` (or ``message``) text, shortened, with our key masked if it echoes it."""
    text = ""
    try:
        data = response.json()
        if isinstance(data, dict):
            text = str(data.get("error") or data.get("message") or data.get("detail") or "")
    except ValueError:
        if "html" not in response.headers.get("Content-Type", ""):
            text = response.text
    text = text.replace(api_key, "***") if api_key else text  # masked before shortening: no head of it survives
    return " ".join(text.split())[:300]


def _reply_image(response: Any) -> Image.Image:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    try:
        if content_type.startswith("image/"):
            return decode_image_bytes(response.content, field="hosted reply")
        if content_type == "application/json" or response.content[:1] in (b"{", b"["):
            return decode_image_bytes(_image_from_json(response.json()), field="hosted reply")
        return decode_image_bytes(response.content, field="hosted reply")
    except (BackdropError, ValueError) as exc:
        raise HostedAPIError(f"the hosted API's answer holds no readable image ({content_type or 'no type'}: {exc})",
                             status=200) from None


def _image_from_json(data: Any) -> bytes:
    """The undocumented JSON shape, read defensively: the first value that decodes as base64 image data,
    looking at "image", "images", "output", "data" first, then anywhere."""
    preferred = ("image", "images", "output", "data", "result")
    candidates: list[Any] = [data[key] for key in preferred if isinstance(data, dict) and key in data]
    candidates.append(data)
    for candidate in candidates:
        for text in _strings(candidate):
            decoded = _maybe_base64(text)
            if decoded:
                return decoded
    raise ValueError("no base64 image in the JSON reply")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _maybe_base64(text: str) -> bytes | None:
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    if len(payload) < 32:
        return None
    try:
        data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    is_image = data[:3] == b"\xff\xd8\xff" or data[:4] in (b"\x89PNG", b"RIFF")  # JPEG, PNG, WebP
    return data if is_image else None


def _credits(response: Any) -> float | None:
    raw = response.headers.get("x-remaining-credits")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _fit(image: Image.Image, side: int) -> Image.Image:
    image = image.convert("RGB")
    if max(image.size) > side:
        image = image.copy()
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return image


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class HostedBackend:
    """The ``Backend`` that sends each sample to the hosted bg-replace API."""

    name = "hosted"
    options = frozenset({"api_key", "settings"})

    def generate(self, request: BgReplaceRequest, **options: Any) -> BgReplaceResult:
        return generate_hosted(request, **options)
