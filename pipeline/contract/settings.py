"""Every environment variable Backdrop reads, in one table, each kind parsed one way.

    setting("BACKDROP_QUEUE_SIZE")   # 16, or the variable's value as a whole number
    check_settings()                 # at start-up: every variable at once

A value is read from the environment each time it is asked for, never frozen at import: a deployment
(or a test) may set a variable after the package is imported. A bad value raises ``BackdropError``
naming the variable, the value given and what is allowed, so the studio, the CLI and the REST endpoint
call ``check_settings`` at start-up and refuse to start on a mistake instead of ignoring it or failing
the first request. The sdxl model ids may also come from the JSON file named by ``BACKDROP_CONFIG``;
the environment wins over the file. Standard library only: the CLI's --help reads settings before torch.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.choices import DEFAULT_MASK_MODEL, DTYPES, MASK_MODELS, MEMORY_MODES, MODEL_SETS
from pipeline.contract.errors import BackdropError

_FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}
_DEVICE = re.compile(r"cuda(:\d+)?|mps|cpu")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its kind, its default and what it means."""

    name: str
    kind: str  # text | whole | number | flag | choice | list | path | url | device | networks
    default: str | None  # written as the variable would be; None: unset means "not set" (see meaning)
    meaning: str
    minimum: float | None = None  # whole and number kinds
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # choice kind
    blank_is_value: bool = False  # set but empty is a value (VAE= means "the base model's own"), not "unset"
    config_key: str | None = None  # its key in the BACKDROP_CONFIG file (the sdxl model ids only)

    def allowed(self) -> str:
        """What is allowed, in words, for error messages."""
        if self.kind in ("whole", "number"):
            number = "a whole number" if self.kind == "whole" else "a number"
            return f"{number} from {_fmt(self.minimum)} to {_fmt(self.maximum)}"
        return {
            "flag": "a yes/no value: 1, true, yes or on; 0, false, no or off",
            "choice": "one of " + ", ".join(repr(choice) for choice in self.choices),
            "url": "an http:// or https:// URL",
            "device": "cuda, cuda:N (a GPU's number), mps or cpu",
            "networks": "comma-separated networks such as 10.1.2.0/24",
        }.get(self.kind, "text")


def _setting(name: str, kind: str, default: str | None, meaning: str, **kwargs: Any) -> Setting:
    return Setting(name=name, kind=kind, default=default, meaning=meaning, **kwargs)


def _model_id(name: str, key: str, default: str, meaning: str) -> Setting:
    return _setting(name, "text", default, meaning, blank_is_value=True, config_key=key)


SETTINGS: dict[str, Setting] = {
    spec.name: spec
    for spec in (
        # --- the studio ---
        _setting("BACKDROP_HOST", "text", None,
                 "Address the studio listens on (else GRADIO_SERVER_NAME, else 127.0.0.1)."),
        _setting("BACKDROP_PORT", "whole", None, "Port the studio listens on (else GRADIO_SERVER_PORT, else 7860).",
                 minimum=1, maximum=65535),
        _setting("BACKDROP_OUTPUT_DIR", "path", "outputs", "Folder the studio saves every result in."),
        _setting("BACKDROP_STUDIO_SERVER_KEY", "flag", None,
                 "Lend the server's SEGMIND_API_KEY to visitors: 1 to all, 0 to none; unset, only where the "
                 "studio is reachable from this machine alone."),
        # --- models and where they run ---
        _setting("BACKDROP_MODEL_SET", "choice", "sdxl", "Default model set: real sdxl or tiny random models.",
                 choices=MODEL_SETS),
        _setting("BACKDROP_DEVICE", "device", None, "Device to run on (unset: the best available; naming cpu "
                 "allows the real models on a CPU)."),
        _setting("BACKDROP_DTYPE", "choice", None, "Precision (unset: float16 on a GPU, float32 on a CPU).",
                 choices=DTYPES),
        _setting("BACKDROP_MEMORY_MODE", "choice", "none", "GPU memory saving: none, model or sequential offload.",
                 choices=MEMORY_MODES),
        _setting("BACKDROP_CONFIG", "path", None, "JSON file of sdxl model ids (keys: the ids' names below); "
                 "environment variables win over it."),
        _model_id("BACKDROP_BASE_MODEL", "base", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
                  "Base inpainting model (hub id or local folder)."),
        _model_id("BACKDROP_CONTROLNET", "controlnet", "diffusers/controlnet-canny-sdxl-1.0", "Canny ControlNet."),
        _model_id("BACKDROP_IP_ADAPTER", "ip_adapter", "h94/IP-Adapter", "IP-Adapter repository."),
        _model_id("BACKDROP_IP_ADAPTER_SUBFOLDER", "ip_adapter_subfolder", "sdxl_models", "IP-Adapter subfolder."),
        _model_id("BACKDROP_IP_ADAPTER_WEIGHT", "ip_adapter_weight_name", "ip-adapter_sdxl.safetensors",
                  "IP-Adapter weight file."),
        _model_id("BACKDROP_IMAGE_ENCODER", "image_encoder", "h94/IP-Adapter", "Image encoder repository."),
        _model_id("BACKDROP_IMAGE_ENCODER_SUBFOLDER", "image_encoder_subfolder", "sdxl_models/image_encoder",
                  "Image encoder subfolder."),
        # The stock SDXL VAE overflows in fp16 and must run in fp32; this fine-tune does not.
        _model_id("BACKDROP_VAE", "vae", "madebyollin/sdxl-vae-fp16-fix", "VAE (empty: the base model's own)."),
        _setting("BACKDROP_RESOLUTION", "whole", "1024", "The base model's native resolution, in pixels.",
                 minimum=64, maximum=4096, config_key="native_resolution"),
        _model_id("BACKDROP_VARIANT", "variant", "fp16", "Weight variant preferred in half precision (empty: none)."),
        _setting("BACKDROP_CACHE", "path", "~/.cache/backdrop", "Folder the tiny model set is built in."),
        _setting("BACKDROP_COMPILE", "flag", "0", "torch.compile the UNet's repeated blocks on CUDA."),
        _setting("BACKDROP_CPU_THREADS", "whole", None, "Threads torch computes with on the CPU (unset: "
                 "OMP_NUM_THREADS when set, else every CPU this process may use).", minimum=1, maximum=4096),
        # --- requests ---
        _setting("BACKDROP_MASK_MODEL", "choice", DEFAULT_MASK_MODEL, "Default mask model.", choices=MASK_MODELS),
        _setting("BACKDROP_MAX_PIXELS", "whole", "64000000", "Largest image accepted, in pixels (width x height).",
                 minimum=64 * 64, maximum=1_000_000_000),
        # --- the REST endpoint and the studio's doors ---
        _setting("BACKDROP_API_KEYS", "list", "", "Comma-separated keys; when set, every door that spends GPU "
                 "time asks for one."),
        _setting("BACKDROP_CORS_ORIGINS", "list", "", "Comma-separated web origins whose pages may call /v1."),
        _setting("BACKDROP_MAX_BODY_MB", "number", "64", "Largest REST request body, in MB.",
                 minimum=0.1, maximum=1024),
        _setting("BACKDROP_QUEUE_SIZE", "whole", "16", "Generations that may wait for the GPU before new ones "
                 "are refused (503).", minimum=1, maximum=1000),
        _setting("BACKDROP_ALLOW_URLS", "flag", "0", "Let REST requests give images as http(s) URLs."),
        _setting("BACKDROP_URL_ALLOW_NETWORKS", "networks", "", "Comma-separated private networks image URLs "
                 "may point into (your own image store)."),
        # --- the hosted API ---
        _setting("SEGMIND_API_KEY", "text", None, "The hosted API's key."),
        _setting("SEGMIND_API_URL", "url", "https://api.segmind.com/v1/bg-replace", "The hosted API's address."),
        _setting("BACKDROP_HOSTED_TIMEOUT", "number", "120", "Seconds to wait for the hosted API's answer.",
                 minimum=0.1, maximum=3600),
        _setting("BACKDROP_HOSTED_BACKOFF", "number", "1", "Seconds before retrying the hosted API (doubled "
                 "before the third try).", minimum=0, maximum=60),
        # --- everything else ---
        _setting("BACKDROP_PRESETS_DIR", "path", "~/.config/backdrop/presets", "Folder your own presets are saved in."),
        _setting("BACKDROP_CANVASES", "path", "~/.config/backdrop/canvases.json",
                 "JSON file of your own named canvas sizes (README, Framing)."),
        _setting("BACKDROP_DEBUG", "flag", "0", "Show the full trace of an internal error in the CLI."),
    )
}


def setting(name: str) -> Any:
    """The variable's value now, parsed by its kind: the environment's, else the BACKDROP_CONFIG file's
    (model ids), else the default. Raises ``BackdropError`` naming the variable if the value is bad."""
    spec = SETTINGS[name]
    raw = os.environ.get(name)
    if raw is not None and (raw.strip() or spec.blank_is_value):
        return _parse(spec, raw, field=name)
    if spec.config_key:
        path, values = _config_file()
        if spec.config_key in values:
            where = f"{path}: {spec.config_key}: "
            return _parse(spec, str(values[spec.config_key]), field="BACKDROP_CONFIG", where=where)
    return setting_default(name)


def setting_default(name: str) -> Any:
    """The variable's default, parsed like a value (None where unset has its own meaning)."""
    spec = SETTINGS[name]
    return None if spec.default is None else _parse(spec, spec.default, field=name)


def cpu_threads() -> int:
    """The threads torch computes with on the CPU: ``BACKDROP_CPU_THREADS``, else ``OMP_NUM_THREADS`` (what Ray
    sets for a worker of N CPUs), else every CPU this process may use. One number, whatever was imported
    before: the same count remakes the same image from a seed, a different one may differ by a level here
    and there (floating-point sums split another way)."""
    chosen = setting("BACKDROP_CPU_THREADS")
    if chosen is None:
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        chosen = int(omp) if omp.isdigit() and int(omp) > 0 else None
    if chosen is None:
        chosen = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return chosen


def check_settings() -> None:
    """Read every variable (and the BACKDROP_CONFIG file): the first mistake raises ``BackdropError``.
    The studio, the CLI and the REST endpoint call this at start-up."""
    for name in SETTINGS:
        setting(name)


def config_keys() -> dict[str, str]:
    """The BACKDROP_CONFIG file's keys, each with the variable that wins over it."""
    return {spec.config_key: spec.name for spec in SETTINGS.values() if spec.config_key}


def _config_file() -> tuple[Path | None, dict[str, Any]]:
    path = setting("BACKDROP_CONFIG")
    if path is None:
        return None, {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackdropError(f"cannot read the model config file {path}: {exc}", field="BACKDROP_CONFIG") from None
    if not isinstance(data, dict):
        raise BackdropError(f"{path} must hold a JSON object", field="BACKDROP_CONFIG")
    unknown = sorted(set(data) - set(config_keys()))
    if unknown:
        raise BackdropError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(config_keys())}",
                            field="BACKDROP_CONFIG")
    return path, data


# --- one parser per kind: each returns the value or raises ValueError ------------------------------------


def _parse(spec: Setting, raw: str, *, field: str, where: str = "") -> Any:
    try:
        return _PARSERS[spec.kind](spec, raw.strip())
    except ValueError:
        shown = repr(raw) if len(raw) < 60 else repr(raw[:57] + "...")
        raise BackdropError(f"{where}{shown} is not allowed; expected {spec.allowed()}", field=field) from None


def _text(spec: Setting, raw: str) -> str:
    return raw


def _whole(spec: Setting, raw: str) -> int:
    return _in_range(spec, int(raw))


def _number(spec: Setting, raw: str) -> float:
    number = float(raw)
    if not math.isfinite(number):
        raise ValueError(raw)
    return _in_range(spec, number)


def _in_range(spec: Setting, number: Any) -> Any:
    if (spec.minimum is not None and number < spec.minimum) or (spec.maximum is not None and number > spec.maximum):
        raise ValueError(number)
    return number


def _flag(spec: Setting, raw: str) -> bool:
    return _FLAG_WORDS[raw.lower()] if raw.lower() in _FLAG_WORDS else _no(raw)


def _choice(spec: Setting, raw: str) -> str:
    """The listed spelling: case and surrounding spaces forgiven (U2NetP is u2netp)."""
    return next((choice for choice in spec.choices if choice.casefold() == raw.casefold()), None) or _no(raw)


def _list(spec: Setting, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _path(spec: Setting, raw: str) -> Path:
    return Path(raw).expanduser()


def _url(spec: Setting, raw: str) -> str:
    return raw if raw.startswith(("http://", "https://")) else _no(raw)


def _device(spec: Setting, raw: str) -> str:
    return raw if _DEVICE.fullmatch(raw) else _no(raw)


def _networks(spec: Setting, raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in _list(spec, raw))


def _no(raw: str) -> Any:
    raise ValueError(raw)


def _fmt(number: float | None) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


_PARSERS: dict[str, Callable[[Setting, str], Any]] = {
    "text": _text, "whole": _whole, "number": _number, "flag": _flag, "choice": _choice, "list": _list,
    "path": _path, "url": _url, "device": _device, "networks": _networks,
}
