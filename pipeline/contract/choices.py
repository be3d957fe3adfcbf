"""Every list of names a request, a flag or a widget chooses from, as plain data.

This module imports nothing but the standard library, so the studio, the CLI's --help and request
validation can list the choices without loading torch, diffusers or rembg. The code behind each name
lives with its layer: schedulers and model sets in ``backends.local``, mask models in ``stages.masking``.
"""

from __future__ import annotations

BACKENDS = ("local", "hosted")
MODEL_SETS = ("sdxl", "tiny")
MEMORY_MODES = ("none", "model", "sequential")
DTYPES = ("float16", "bfloat16", "float32")
OUTPUT_SIZES = ("input", "generation")
OUTPUT_FORMATS = ("jpeg", "png")
# How the product meets the ground in its new scene (stages.grounding): none (as photographed, cut out),
# a contact line, a soft or a hard cast shadow, a detached shadow below a lifted product, or the photo's own.
SHADOW_MODES = ("none", "contact", "soft", "hard", "floating", "original")

# Where the product sits in the canvas's padded box (stages.framing): the centre, a side or a corner.
PLACEMENTS = ("center", "bottom", "top", "left", "right", "top-left", "top-right", "bottom-left", "bottom-right")

# Product-friendly rembg models. birefnet-general-lite is the default: BiRefNet is trained for sharp
# object boundaries (not only people or salient blobs), it is MIT-licensed (rembg's own default,
# bria-rmbg, is non-commercial) and the lite build is 224 MB and a few seconds on a CPU, where the
# full birefnet-general is 973 MB and several times slower. u2netp is the tiny, fast one tests use.
MASK_MODELS: tuple[str, ...] = (
    "birefnet-general-lite",
    "birefnet-general",
    "birefnet-massive",
    "isnet-general-use",
    "u2net",
    "u2netp",
    "silueta",
)
DEFAULT_MASK_MODEL = "birefnet-general-lite"

# The hosted API's scheduler names (backends.local.schedulers maps each to its diffusers class).
SCHEDULER_NAMES: tuple[str, ...] = (
    "DDIM",
    "DPM Multi",
    "DPM Single",
    "Euler a",
    "Euler",
    "Heun",
    "DPM2 a Karras",
    "DPM2 Karras",
    "LMS",
    "PNDM",
    "UniPC",
    "DPM++ 2M Karras",
)
DEFAULT_SCHEDULER = "DPM2 Karras"

# Second-order solvers run the UNet about twice per step: worth telling a user who watches the clock.
SECOND_ORDER = frozenset({"DPM2 Karras", "DPM2 a Karras", "Heun"})


def canonical_scheduler_name(name: str) -> str | None:
    """The listed spelling of ``name`` (case and spacing forgiven), or None if it is not one of ours."""
    wanted = " ".join(name.split()).casefold()
    return next((known for known in SCHEDULER_NAMES if known.casefold() == wanted), None)
