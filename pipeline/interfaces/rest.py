"""A bg-replace-compatible REST endpoint: ``POST /v1/bg-replace`` and ``GET /v1/health``.

Teams move off the hosted service by changing one URL. The body is the hosted API's JSON (plus
Backdrop's own options); generation waits in the same GPU line as the studio.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.contract.errors import BackdropError
from pipeline.contract.images import encode_image
from pipeline.contract.request import FIELDS, HOSTED_FIELDS, IMAGE_FIELDS, BgReplaceRequest, loads_json
from pipeline.contract.result import BgReplaceResult
from pipeline.contract.settings import check_settings, setting
from pipeline.interfaces.fetch import fetch_image_url
from pipeline.stages.quality import quality_headers
from pipeline.workflows.queue import GenerationQueue, QueueFull

log = logging.getLogger("backdrop.rest")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # a server on these is reachable from this machine only

RETRY_AFTER_SECONDS = 15
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


def api_keys() -> set[str]:
    """BACKDROP_API_KEYS: comma-separated keys; when set, every request needs one in ``x-api-key``."""
    return set(setting("BACKDROP_API_KEYS"))


def max_body_bytes() -> int:
    """BACKDROP_MAX_BODY_MB (64 by default: two 20 MB photos, base64-encoded, with room to spare)."""
    return int(setting("BACKDROP_MAX_BODY_MB") * 1024 * 1024)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def create_rest_app(*, model_set: str, queue: GenerationQueue) -> FastAPI:
    """The ``/v1`` application, to be mounted on the studio's server (its docs are at ``/v1/docs``)."""
    api = FastAPI(
        title="Backdrop REST API",
        version="1",
        description="A self-hosted, drop-in replacement for the hosted bg-replace API.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @api.post("/bg-replace", summary="Replace a product photo's background",
              responses=_DOCUMENTED_RESPONSES, openapi_extra={"requestBody": _request_body_schema()})
    async def bg_replace(request: Request) -> Response:
        request_id = uuid.uuid4().hex[:12]
        started = time.perf_counter()
        try:
            _check_key(request)
            _check_content_type(request)
            fields = await _read_json(request)
            result = await run_in_threadpool(_generate, fields, model_set, queue)
        except QueueFull as busy:
            return _error(503, str(busy))
        except BackdropError as error:
            return _error(error.http_status, str(error), **({"field": error.field} if error.field else {}))
        except Exception:
            log.exception("request %s failed", request_id)
            return _error(500, "internal error; the server log has the details", request_id=request_id)
        return _reply(result, time.perf_counter() - started, request_id)

    @api.api_route("/bg-replace", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def wrong_method(request: Request) -> JSONResponse:
        response = _error(405, f"{request.method} is not allowed here; use POST with a JSON body")
        response.headers["Allow"] = "POST"
        return response

    @api.get("/health", summary="Device, model set, loaded models and queue length")
    async def health(request: Request) -> dict[str, Any]:
        from pipeline.backends.local.models import loaded_model_sets

        if not has_valid_key(request.headers.get("x-api-key", "")):
            return {"status": "ok"}  # with keys set, strangers learn only that the server is up
        loaded = loaded_model_sets()
        return {"status": "ok", "device": _device(), "model_set": model_set,
                "models_loaded": any(entry["model_set"] == model_set for entry in loaded),
                "loaded": loaded, "queue": queue.stats()}

    return api


def mount_rest(server_app: Any, *, model_set: str, queue: GenerationQueue, host: str = "127.0.0.1") -> FastAPI:
    """Mount the REST app at ``/v1`` on a running studio's FastAPI app; warn if it is open without keys."""
    check_settings()
    api = create_rest_app(model_set=model_set, queue=queue)
    server_app.mount("/v1", api)
    if host not in LOOPBACK_HOSTS and not api_keys():
        log.warning("the studio and its REST endpoint listen on %s without BACKDROP_API_KEYS: anyone who can "
                    "reach them can use your GPU; set BACKDROP_API_KEYS=key1,key2 to require a key", host)
    return api


def has_valid_key(given: str) -> bool:
    """Whether ``given`` is one of BACKDROP_API_KEYS (always true when no keys are set)."""
    keys = api_keys()
    return not keys or is_one_of(given, keys)


def is_one_of(given: str, keys: set[str]) -> bool:
    """``given`` equals one of ``keys``, compared in constant time (no timing hints at a key's prefix)."""
    return any(hmac.compare_digest(given.encode(), key.encode()) for key in keys)


def _check_key(request: Request) -> None:
    given = request.headers.get("x-api-key", "")
    if not has_valid_key(given):
        raise _Unauthorized("missing or wrong x-api-key header" if given else "missing x-api-key header")


def _check_content_type(request: Request) -> None:
    """JSON only: a web page can make a visitor's browser send a "simple" text/plain or form POST to
    127.0.0.1 without asking, but not an application/json one (that needs a CORS preflight we refuse)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _UnsupportedMediaType(f"the body must be sent as Content-Type: application/json, not "
                                    f"{media_type or 'no content type'}")


class _Unauthorized(BackdropError):
    http_status = 401


class _TooLarge(BackdropError):
    http_status = 413


class _UnsupportedMediaType(BackdropError):
    http_status = 415


async def _read_json(request: Request) -> dict[str, Any]:
    limit = max_body_bytes()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"the body is {int(declared) / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge(f"the body is over the {limit / 1e6:.1f} MB limit")
    try:
        data = loads_json(bytes(body).decode("utf-8"))
    except UnicodeDecodeError:
        raise BackdropError("the body is not UTF-8 text; send JSON") from None
    except ValueError as exc:
        raise BackdropError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BackdropError(f"the body must be a JSON object, not {type(data).__name__}")
    return data


def _generate(fields: dict[str, Any], model_set: str, queue: GenerationQueue) -> BgReplaceResult:
    """Blocking work, run in a worker thread: fetch URL images, validate, wait for the GPU, generate."""
    from pipeline.backends import generate

    for name in IMAGE_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
            fields[name] = fetch_image_url(value.strip(), field=name)
    request = BgReplaceRequest.from_dict(fields)
    with queue.slot():
        return generate(request, model_set=model_set)


def _reply(result: BgReplaceResult, seconds: float, request_id: str) -> Response:
    image_format = result.request.output_format
    encoded = [encode_image(image, image_format) for image in result.images]
    headers = {"x-seeds": ",".join(map(str, result.seeds)), "x-inference-time": f"{seconds:.3f}",
               "x-request-id": request_id}
    if result.info.get("product_change"):  # light match changed the product's pixels: by this much, per image
        headers["x-product-change"] = ",".join(f"{change:g}" for change in result.info["product_change"])
    quality = result.info.get("quality") or []
    headers |= quality_headers(quality)
    if len(encoded) == 1 and not result.request.base64:
        return Response(encoded[0], media_type=MEDIA_TYPES[image_format], headers=headers)
    images = [base64.b64encode(data).decode("ascii") for data in encoded]
    # Several images never come back as one JPEG with the rest silently dropped: JSON carries them all.
    return JSONResponse({"image": images[0], "images": images, "seeds": list(result.seeds), "quality": quality},
                        headers=headers)


def curl_example(settings: dict[str, Any], url: str, *, hosted: bool) -> str:
    """A runnable curl command (bash) for ``settings`` against ``url``. The key is read from an
    environment variable, never written out; the hosted API gets only its own fields."""
    allowed = HOSTED_FIELDS if hosted else tuple(FIELDS)
    body = {name: FIELDS[name].coerce(value) for name, value in settings.items()
            if name in allowed and name not in IMAGE_FIELDS}
    body = {name: value for name, value in body.items() if value is not None}
    key = "SEGMIND_API_KEY" if hosted else "BACKDROP_API_KEY"
    # `base64 < file | tr -d '\n'` rather than GNU's `base64 -w0`: the same command runs on macOS too.
    lines = ['"image": "$(base64 < product.jpg | tr -d \'\\n\')"',
             '"ref_image": "$(base64 < reference.jpg | tr -d \'\\n\')"']
    for name, value in body.items():  # literal text inside the heredoc: escape what the shell would expand
        text = json.dumps(value, ensure_ascii=False)
        lines.append(f'"{name}": ' + text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`"))
    extension = ".png" if body.get("output_format") == "png" else ".jpg"
    json_reply = bool(body.get("base64")) or (not hosted and (body.get("samples") or 1) > 1)
    command = (f"# Replace product.jpg and reference.jpg with your files; the key comes from ${key}.\n"
               + (_JSON_REPLY_NOTE if json_reply else "")
               + f"curl -s {url} -H \"Content-Type: application/json\" -H \"x-api-key: ${key}\" \\\n"
               f"  -o {'result.json' if json_reply else 'result' + extension} --data-binary @- <<EOF\n{{\n  "
               + ",\n  ".join(lines) + "\n}\nEOF\n")
    return command + (_DECODE_JSON_REPLY.format(extension=extension) if json_reply else "")


# Several images (or base64: true) come back as JSON, never squeezed into one image file: the command
# saves the reply as JSON and then writes each image out under its seed.
_JSON_REPLY_NOTE = "# The reply is JSON (base64 images): the last line writes each image as result_<seed>.\n"
_DECODE_JSON_REPLY = (
    "python3 -c 'import base64, json; r = json.load(open(\"result.json\"));"
    " [open(f\"result_{{seed}}{extension}\", \"wb\").write(base64.b64decode(image))"
    " for seed, image in zip(r.get(\"seeds\", [\"1\"]), r.get(\"images\", [r[\"image\"]]))]'\n"
)


def _device() -> str:
    try:
        from pipeline.backends.local.models import resolve_runtime

        return resolve_runtime().device
    except BackdropError as error:
        return f"unavailable: {error}"


def _request_body_schema() -> dict[str, Any]:
    """The JSON body as an OpenAPI schema, built from the same field specs that validate it."""
    types = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "choice": "string",
             "image": "string", "canvas": "string"}
    properties = {}
    for name, spec in FIELDS.items():
        schema: dict[str, Any] = {"type": types[spec.kind], "description": spec.help}
        if spec.kind == "image":
            schema["description"] += " Base64 (a data: prefix is fine) or, where the server allows it, an http(s) URL."
        if spec.minimum is not None:
            schema |= {"minimum": spec.minimum, "maximum": spec.maximum}
        if spec.choices:
            schema["enum"] = list(spec.choices)
        if not spec.required:
            schema["default"] = spec.current_default()
        if spec.optional:
            schema["nullable"] = True
        properties[name] = schema
    required = [name for name, spec in FIELDS.items() if spec.required]
    example = {"image": "<base64 JPEG or PNG>", "ref_image": "<base64 JPEG or PNG>",
               "prompt": "perfume bottle on a mossy rock in a jungle", "samples": 1, "seed": 42, "base64": False}
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}


_DOCUMENTED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "One image (image/jpeg or image/png) when samples is 1 and base64 is false; otherwise "
                         'JSON {"image": <base64 of the first>, "images": [...], "seeds": [...]}. Headers: '
                         "x-seeds, x-inference-time, x-request-id; x-product-change (mean colour change of the "
                         "product in 8-bit levels, per image) when light_match changed it; and the quality check "
                         "(README, 'Quality check') per image, comma-separated like x-seeds: x-quality-verdict (ok or "
                         "review), x-quality-expansion, x-quality-mask-uncertainty, x-quality-product-change, "
                         "x-quality-upscale (empty where not measured); the JSON reply carries them as "
                         '"quality", one object per image.',
          "content": {"image/jpeg": {}, "image/png": {}, "application/json": {}}},
    400: {"description": 'A bad field: {"error": "<field>: <what was wrong and what is allowed>", "field": ...}'},
    401: {"description": "BACKDROP_API_KEYS is set and x-api-key is missing or wrong."},
    415: {"description": "The body was not sent as Content-Type: application/json."},
    413: {"description": "The body is over BACKDROP_MAX_BODY_MB (64 MB by default)."},
    500: {"description": "An unexpected failure; the reply carries a request_id to find it in the server log."},
    503: {"description": "The queue is full (Retry-After says when to come back), or a model could not load."},
}
