"""The request: the hosted bg-replace fields (README, "The request") plus Backdrop's own options, defined once.

``FIELDS`` holds each field's type, default, range and help text. The UI builds its sliders from it,
the CLI its flags, the REST layer its schema and presets their checks, so a range changes in one place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.contract.canvases import INPUT_CANVAS, allowed_canvases, normalise_canvas
from pipeline.contract.choices import (
    DEFAULT_MASK_MODEL,
    DEFAULT_SCHEDULER,
    MASK_MODELS,
    OUTPUT_FORMATS,
    OUTPUT_SIZES,
    PLACEMENTS,
    SCHEDULER_NAMES,
    SHADOW_MODES,
    canonical_scheduler_name,
)
from pipeline.contract.errors import BackdropError
from pipeline.contract.images import load_image
from pipeline.contract.settings import setting

MAX_PROMPT_CHARS = 2000
MAX_SEED = 999_999_999_999_999

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def loads_json(text: str | bytes, *, field: str | None = None) -> Any:
    """``json.loads``, but a document nested too deeply for the parser (``[[[[...``) is a ``BackdropError``
    naming the field, not a ``RecursionError``; malformed JSON still raises ``ValueError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise BackdropError("the JSON is nested too deeply; send a flat object of settings", field=field) from None


@dataclass(frozen=True)
class FieldSpec:
    """One request field: how it is typed, defaulted, bounded and explained."""

    name: str
    kind: str  # "image" | "str" | "int" | "float" | "bool" | "choice" | "canvas"
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # None is an allowed value
    hosted: bool = True  # part of the hosted API's contract (the README's first thirteen fields), not a Backdrop option
    help: str = ""
    env: str | None = None  # an environment variable that sets this field's default for the whole machine

    def current_default(self) -> Any:
        """The default now: ``env``'s value where it is set (read and checked by contract.settings), else
        ``default``."""
        value = setting(self.env) if self.env else None
        return self.default if value is None else value

    def allowed(self) -> str:
        """What is allowed, in words, for error messages and help text."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind in ("int", "float"):
            kind = "a whole number" if self.kind == "int" else "a number"
            text = f"{kind} from {_fmt(self.minimum)} to {_fmt(self.maximum)}"
            return text + (" (or null)" if self.optional else "")
        if self.kind == "bool":
            return "true or false"
        if self.kind == "image":
            return "an image (file, bytes or base64)"
        if self.kind == "canvas":
            return allowed_canvases()
        return "text"

    def coerce(self, value: Any) -> Any:
        """Return ``value`` in this field's type, or raise ``BackdropError`` naming the field."""
        blank = isinstance(value, str) and not value.strip() and (self.optional or self.kind == "image")
        if value is None or blank:
            if self.required:
                raise BackdropError(f"is required; expected {self.allowed()}", field=self.name)
            return self.current_default()  # null means "the default", as in a body that spells out every key
        return getattr(self, f"_coerce_{self.kind}")(value)

    def _fail(self, value: Any, why: str = "") -> BackdropError:
        shown = repr(value) if not isinstance(value, str) or len(value) < 60 else repr(value[:57] + "...")
        return BackdropError(f"{shown} is {why or 'not allowed'}; expected {self.allowed()}", field=self.name)

    def _coerce_image(self, value: Any) -> Image.Image:
        return load_image(value, field=self.name)

    def _coerce_str(self, value: Any) -> str | None:
        if not isinstance(value, str):
            raise self._fail(value, f"a {type(value).__name__}, not text")
        text = _CONTROL_CHARS.sub(" ", value).strip()
        if len(text) > MAX_PROMPT_CHARS:
            raise BackdropError(
                f"{len(text)} characters is too long; at most {MAX_PROMPT_CHARS}", field=self.name
            )
        if not text:
            if self.required:
                raise BackdropError("must not be empty", field=self.name)
            return None
        return text

    def _coerce_int(self, value: Any) -> int:
        number = self._number(value)
        if not float(number).is_integer():
            raise self._fail(value, "not a whole number")
        return self._bounded(int(number), value)

    def _coerce_float(self, value: Any) -> float:
        return self._bounded(float(self._number(value)), value)

    def _coerce_bool(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise self._fail(value, "not a yes/no value")

    def _coerce_choice(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._fail(value, f"a {type(value).__name__}, not a name")
        match = (
            canonical_scheduler_name(value)
            if self.name == "scheduler"
            else next((c for c in self.choices if c.casefold() == value.strip().casefold()), None)
        )
        if match is None:
            raise self._fail(value, "unknown")
        return match

    def _coerce_canvas(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._fail(value, f"a {type(value).__name__}, not a size or a name")
        return normalise_canvas(value)

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self._fail(value, f"a {type(value).__name__}, not a number")
        if isinstance(value, str):
            try:
                value = float(value.strip()) if re.search(r"[.eEnN]", value) else int(value.strip())
            except ValueError:
                raise self._fail(value, "not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise self._fail(value, "not a finite number")
        return value

    def _bounded(self, number: int | float, original: Any) -> Any:
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise self._fail(original, "out of range")
        return number


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def least_strength(steps: int) -> float:
    """The smallest strength, in thousandths, that leaves at least one of ``steps`` denoising steps."""
    least = math.ceil(1000 / steps) / 1000
    while int(steps * least) < 1:  # 1/steps can land a hair under a whole step in floating point
        least += 0.001
    return round(least, 3)


def _fmt(number: float | None) -> str:
    return "" if number is None else f"{number:g}" if isinstance(number, float) else str(number)


def _spec(name: str, kind: str, **kwargs: Any) -> FieldSpec:
    return FieldSpec(name=name, kind=kind, **kwargs)


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        # --- the hosted API's fields, as the README's "The request" lists them ---
        _spec("image", "image", required=True, help="Product photo, ideally on a plain or white background."),
        _spec("ref_image", "image", required=True, help="Reference picture of the setting (IP-Adapter)."),
        _spec("prompt", "str", required=True, help="What the new scene should be."),
        _spec("negative_prompt", "str", optional=True, help="What to keep out of the image."),
        _spec("samples", "int", default=1, minimum=1, maximum=4, help="Number of images."),
        _spec("scheduler", "choice", default=DEFAULT_SCHEDULER, choices=SCHEDULER_NAMES, help="Sampler."),
        _spec("num_inference_steps", "int", default=25, minimum=20, maximum=100, help="Denoising steps."),
        _spec("guidance_scale", "float", default=7.5, minimum=1.0, maximum=25.0, help="Prompt adherence (CFG)."),
        _spec("seed", "int", default=-1, minimum=-1, maximum=MAX_SEED, help="-1 picks a random seed."),
        _spec("strength", "float", default=1.0, minimum=0.0, maximum=1.0, help="1 = a wholly new background."),
        _spec("cn_weight", "float", default=0.9, minimum=0.0, maximum=1.0, help="ControlNet (canny) weight."),
        _spec("ip_adapter_weight", "float", default=0.5, minimum=0.0, maximum=1.0,
              help="How strongly the reference image steers the scene."),
        _spec("base64", "bool", default=False, help="Hosted/REST only: answer with base64 JSON."),
        # --- Backdrop's own options ---
        _spec("mask_model", "choice", default=DEFAULT_MASK_MODEL, choices=MASK_MODELS, hosted=False,
              env="BACKDROP_MASK_MODEL", help="Background-removal model that finds the product."),
        _spec("mask", "image", optional=True, hosted=False,
              help="Your own product mask (white = product); overrides the mask model."),
        _spec("mask_grow", "int", default=0, minimum=-64, maximum=64, hosted=False,
              help="Grow (+) or shrink (-) the kept product area, in pixels."),
        _spec("mask_feather", "int", default=0, minimum=0, maximum=64, hosted=False,
              help="Soften the product edge by this many pixels."),
        _spec("canny_low", "int", default=100, minimum=0, maximum=255, hosted=False, help="Canny low threshold."),
        _spec("canny_high", "int", default=200, minimum=0, maximum=255, hosted=False, help="Canny high threshold."),
        _spec("resolution", "int", optional=True, minimum=64, maximum=2048, hosted=False,
              help="Generate at about this many pixels squared (null = the model's native size)."),
        _spec("output_size", "choice", default="input", choices=OUTPUT_SIZES, hosted=False,
              help="'input': the photo's own resolution; 'generation': the generated size."),
        _spec("output_format", "choice", default="jpeg", choices=OUTPUT_FORMATS, hosted=False,
              help="File format for saved and returned images."),
        _spec("canvas", "canvas", default=INPUT_CANVAS, hosted=False,
              help="The output's canvas: 'input' keeps the photo's own size and framing; a size such as 2000x2000 "
                   "or a named size places the product on it (README, \"Framing\")."),
        _spec("padding", "float", default=0.0, minimum=0.0, maximum=0.45, hosted=False,
              help="Empty margin on each side of the canvas, as a fraction of its side (0.075: the product fills "
                   "85% of the frame). Needs a canvas."),
        _spec("placement", "choice", default="center", choices=PLACEMENTS, hosted=False,
              help="Where the product sits in the padded box: center, bottom (standing on the lower margin), a "
                   "side or a corner. Needs a canvas."),
        _spec("shadow", "choice", default="none", choices=SHADOW_MODES, hosted=False,
              help="The product's shadow on the new background: none, contact (where it meets the ground), "
                   "soft or hard (cast away from the light), floating (lifted), original (the photo's own)."),
        _spec("shadow_opacity", "float", optional=True, minimum=0.0, maximum=1.0, hosted=False,
              help="How dark the shadow is at its deepest (null = the mode's own)."),
        _spec("shadow_angle", "float", default=315.0, minimum=0.0, maximum=360.0, hosted=False,
              help="Where the light comes from, in degrees: 0 the camera, 90 the right, 180 behind, 270 the left."),
        _spec("shadow_softness", "float", optional=True, minimum=0.0, maximum=1.0, hosted=False,
              help="0 = a crisp shadow edge, 1 = a very diffuse one (null = the mode's own)."),
        _spec("shadow_length", "float", optional=True, minimum=0.0, maximum=2.0, hosted=False,
              help="Cast shadow's length in product heights; floating: how high it floats (null = the mode's own)."),
        _spec("reflection", "float", default=0.0, minimum=0.0, maximum=1.0, hosted=False,
              help="A mirrored, fading copy of the product below it, for glossy surfaces (0 = none)."),
        _spec("light_match", "float", default=0.0, minimum=0.0, maximum=1.0, hosted=False,
              help="Move the product's white balance and exposure toward the scene's light (0 = untouched)."),
        _spec("detail", "float", default=0.0, minimum=0.0, maximum=1.0, hosted=False,
              help="Local only: refine the enlarged background in tiles at the output's full size "
                   "(0 = off; higher = more new detail, slower)."),
        _spec("qa_max_expansion", "float", default=0.05, minimum=0.0, maximum=100.0, hosted=False,
              help="Quality check: most product found outside the input product, as a fraction of its area."),
        _spec("qa_max_mask_uncertainty", "float", default=0.35, minimum=0.0, maximum=1.0, hosted=False,
              help="Quality check: most of the product's mask the mask model may be unsure of."),
        _spec("qa_max_product_change", "float", default=0.1, minimum=0.0, maximum=1.0, hosted=False,
              help="Quality check: most change light match may make to the product's own pixels, as a share "
                   "of the 0-255 range (0.1 = 25.5 levels on average)."),
        _spec("qa_max_upscale", "float", default=2.0, minimum=1.0, maximum=100.0, hosted=False,
              help="Quality check: most enlargement of the product from the photo's pixels."),
    )
}

IMAGE_FIELDS = tuple(name for name, spec in FIELDS.items() if spec.kind == "image")
HOSTED_FIELDS = tuple(name for name, spec in FIELDS.items() if spec.hosted)


def _default(name: str) -> Any:
    """The dataclass default of field ``name``, taken from ``FIELDS`` so it is written once.

    A field whose default an environment variable can change (``FieldSpec.env``) defaults to None here:
    ``FieldSpec.coerce`` turns None into the default of the moment, so the variable is read when a request
    is made, not once at import.
    """
    spec = FIELDS[name]
    return None if spec.env else spec.default


@dataclass(frozen=True)
class BgReplaceRequest:
    """One background-replace job. Constructing it validates and normalises every field.

    The fields are ``FIELDS``' names in the same order (a test checks it); their defaults come from there.
    """

    image: Image.Image
    ref_image: Image.Image
    prompt: str
    negative_prompt: str | None = _default("negative_prompt")
    samples: int = _default("samples")
    scheduler: str = _default("scheduler")
    num_inference_steps: int = _default("num_inference_steps")
    guidance_scale: float = _default("guidance_scale")
    seed: int = _default("seed")
    strength: float = _default("strength")
    cn_weight: float = _default("cn_weight")
    ip_adapter_weight: float = _default("ip_adapter_weight")
    base64: bool = _default("base64")
    mask_model: str | None = _default("mask_model")  # None until made: BACKDROP_MASK_MODEL, else FIELDS
    mask: Image.Image | None = _default("mask")
    mask_grow: int = _default("mask_grow")
    mask_feather: int = _default("mask_feather")
    canny_low: int = _default("canny_low")
    canny_high: int = _default("canny_high")
    resolution: int | None = _default("resolution")
    output_size: str = _default("output_size")
    output_format: str = _default("output_format")
    canvas: str = _default("canvas")
    padding: float = _default("padding")
    placement: str = _default("placement")
    shadow: str = _default("shadow")
    shadow_opacity: float | None = _default("shadow_opacity")  # None: the shadow mode's own
    shadow_angle: float = _default("shadow_angle")
    shadow_softness: float | None = _default("shadow_softness")
    shadow_length: float | None = _default("shadow_length")
    reflection: float = _default("reflection")
    light_match: float = _default("light_match")
    detail: float = _default("detail")
    qa_max_expansion: float = _default("qa_max_expansion")
    qa_max_mask_uncertainty: float = _default("qa_max_mask_uncertainty")
    qa_max_product_change: float = _default("qa_max_product_change")
    qa_max_upscale: float = _default("qa_max_upscale")
    # The file name each image came from (``{"image": "bottle.jpg", ...}``), where it came from a file: saved
    # sidecars record it, so a result can be traced back to its photo. Not a request field: never sent.
    sources: dict[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = {name: getattr(self, name).name for name in IMAGE_FIELDS if isinstance(getattr(self, name), Path)}
        kept = {name: source for name, source in self.sources.items() if getattr(self, name) is not None}
        object.__setattr__(self, "sources", kept | names)  # a copy (replace()) keeps its original's names
        for spec in FIELDS.values():
            object.__setattr__(self, spec.name, spec.coerce(getattr(self, spec.name)))
        if self.canny_low > self.canny_high:
            raise BackdropError(
                f"{self.canny_low} is above canny_high ({self.canny_high}); the low threshold must not exceed "
                "the high one",
                field="canny_low",
            )
        self._check_strength_leaves_a_step()
        self._check_framing_has_a_canvas()

    def _check_strength_leaves_a_step(self) -> None:
        """diffusers runs ``int(num_inference_steps * strength)`` steps and raises from deep inside the
        pipeline when that is 0; refuse such a strength here, with the least one that works."""
        if int(self.num_inference_steps * self.strength) >= 1:
            return
        least = least_strength(self.num_inference_steps)
        raise BackdropError(
            f"{_fmt(float(self.strength))} leaves no denoising step at {self.num_inference_steps} steps; "
            f"at {self.num_inference_steps} steps use at least {_fmt(least)} (or more steps)",
            field="strength",
        )

    def _check_framing_has_a_canvas(self) -> None:
        """``padding`` and ``placement`` place the product on a canvas; with ``canvas`` ``input`` there is none,
        and a value that would be silently ignored is refused instead."""
        if self.canvas != INPUT_CANVAS:
            return
        for name in ("padding", "placement"):
            if getattr(self, name) != FIELDS[name].default:
                raise BackdropError(
                    f"{getattr(self, name)!r} needs a canvas, and canvas is {INPUT_CANVAS!r} (the photo's own "
                    f"framing); set canvas to a size such as 2000x2000 or a named size, or leave {name} at "
                    f"{FIELDS[name].default!r}", field=name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BgReplaceRequest:
        """Build from a JSON-like mapping (REST body, preset, sidecar), rejecting unknown keys by name."""
        if not isinstance(data, Mapping):
            raise BackdropError(f"the request must be a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise BackdropError(
                f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(FIELDS)}"
            )
        missing = [name for name, spec in FIELDS.items() if spec.required and data.get(name) is None]
        if missing:
            raise BackdropError(f"is required; expected {FIELDS[missing[0]].allowed()}", field=missing[0])
        return cls(**dict(data))

    def replace(self, **changes: Any) -> BgReplaceRequest:
        """A copy with ``changes`` applied and validated (sweeps and per-sample seeds use this)."""
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict[str, Any]:
        """Every field but the images, JSON-ready: what sidecars, metadata and presets store."""
        return {name: getattr(self, name) for name in FIELDS if name not in IMAGE_FIELDS}

    def settings_json(self) -> str:
        return json.dumps(self.settings(), indent=2, ensure_ascii=False)
