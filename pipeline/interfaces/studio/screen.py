"""What the studio's screen calls things: each input's label, the inputs' names in the order of the
/generate and /compare APIs, and messages that name a field the way the screen does."""

from __future__ import annotations

from typing import Any

from pipeline.contract.errors import BackdropError
from pipeline.contract.request import FIELDS

BACKENDS = ("Local GPU", "Hosted API")
COMPARE_MODES = ("Grid", "A/B", "Local vs Hosted")
EXAMPLES = [
    ["product-perfume.jpg", "scene-jungle.jpg", "perfume bottle on a mossy rock in a lush jungle, morning light"],
    ["product-shoe.jpg", "scene-wood.jpg", "running shoe on a rustic wooden deck, warm sunset light"],
    ["product-ring.jpg", "scene-marble.jpg", "gold ring with a diamond on white marble, soft studio light"],
    ["product-chair.jpg", "scene-studio.jpg", "wooden chair in a bright minimalist studio, soft shadows"],
]
# The studio's inputs, in the order of the /generate and /compare APIs: the request's own field names.
REQUEST_INPUTS = ("image", "ref_image", "prompt", "negative_prompt", "samples", "scheduler", "num_inference_steps",
                  "guidance_scale", "seed", "strength", "cn_weight", "ip_adapter_weight", "mask", "mask_model",
                  "mask_grow", "mask_feather", "canny_low", "canny_high", "resolution", "output_size",
                  "output_format", "backend", "api_key",
                  # Backdrop's later options: after the first ones, so positional API calls keep their places.
                  "canvas", "padding", "placement", "shadow", "shadow_opacity", "shadow_angle", "shadow_softness",
                  "shadow_length", "reflection", "light_match", "detail", "qa_max_expansion",
                  "qa_max_mask_uncertainty", "qa_max_product_change", "qa_max_upscale")
# What "Load settings" and presets restore: every request field but the images.
SETTING_INPUTS = tuple(name for name in REQUEST_INPUTS if name in FIELDS and FIELDS[name].kind != "image")
COMPARE_INPUTS = ("mode", "x_axis", "x_values", "y_axis", "y_values", "settings_a", "settings_b")
COMPARE_MODE_FIELDS = {"Grid": ("x_axis", "x_values", "y_axis", "y_values"), "A/B": ("settings_a", "settings_b"),
                       "Local vs Hosted": ()}
COMPARE_MODE_INPUTS = tuple(name for names in COMPARE_MODE_FIELDS.values() for name in names)
# Choices that belong to this machine or person, not to a kind of product: a preset never changes them
# (a preset naming a mask model this machine lacks would break the next Generate).
MACHINE_SETTINGS = ("mask_model",)
# What each input is called on the screen. The widgets take their labels from here, and a message about a
# field names it the same way ("Product photo (image): ..."), with the API's name in brackets.
LABELS = {
    "image": "Product photo", "ref_image": "Reference setting", "prompt": "Prompt",
    "negative_prompt": "Negative prompt", "samples": "Images", "scheduler": "Scheduler",
    "num_inference_steps": "Steps", "guidance_scale": "Guidance scale", "seed": "Seed (-1 = random)",
    "strength": "Strength", "cn_weight": "ControlNet weight", "ip_adapter_weight": "Reference weight",
    "mask": "Your own mask (white = product)", "mask_model": "Mask model", "mask_grow": "Grow mask (px)",
    "mask_feather": "Feather (px)", "canny_low": "Canny low", "canny_high": "Canny high",
    "resolution": "Generation size (0 = the model's own)", "output_size": "Return at", "output_format": "Format",
    "backend": "Backend", "api_key": "Hosted API key", "preset": "Preset",
    "preset_name": "Name for a new preset (made of the current settings)",
    "settings": "Settings file (drop a Backdrop result to load its settings)",
    "mode": "Compare", "x_axis": "X axis", "y_axis": "Y axis", "axis values": "X and Y values",
    "settings_a": "A/B: settings A (JSON changes)", "settings_b": "A/B: settings B (JSON changes)",
    "canvas": "Canvas (input = the photo's own framing)", "padding": "Padding", "placement": "Placement",
    "framing_preview": "Framing preview (checkerboard = the new scene)", "shadow": "Shadow",
    "shadow_opacity": "Shadow opacity", "shadow_angle": "Light from (degrees)", "shadow_softness": "Shadow softness",
    "shadow_length": "Shadow length", "reflection": "Reflection", "light_match": "Light match (changes the product)",
    "detail": "Detail (0 = off)", "qa_max_expansion": "Review above expansion",
    "qa_max_mask_uncertainty": "Review above mask uncertainty", "qa_max_product_change": "Review above product change",
    "qa_max_upscale": "Review above upscale",
}
# The shadow's knobs that default to "the mode's own" (null in a request): their sliders show the chosen
# mode's own values, and a slider left there sends null, so the studio's request equals the CLI's.
SHADOW_KNOBS = {"shadow_opacity": "opacity", "shadow_softness": "softness", "shadow_length": "length"}


def short_label(name: str) -> str:
    """A field's on-screen label without its hint in brackets: "Seed" for "Seed (-1 = random)"."""
    return LABELS[name].split(" (")[0]


def on_screen(error: BackdropError) -> str:
    """The error's message naming its field as the screen does: "Product photo (image): the file is empty"."""
    if error.field not in LABELS:
        return str(error)
    return f"{short_label(error.field)} ({error.field}): {error.detail}"


def mode_knobs(shadow: str | None) -> dict[str, float]:
    """The shadow mode's own opacity, softness and length, as their sliders show them (0 without a shadow)."""
    from pipeline.stages.grounding import MODE_DEFAULTS

    look = MODE_DEFAULTS.get(shadow or "none")
    return {name: getattr(look, part) if look else 0.0 for name, part in SHADOW_KNOBS.items()}


def on_screen_value(name: str, value: Any, shadow: str | None = None) -> Any:
    """A setting as its widget shows it: "the model's own" generation size is 0 in its box; a shadow knob
    left to its mode shows the mode's own value."""
    if value is None and name == "resolution":
        return 0
    if value is None and name in SHADOW_KNOBS:
        return mode_knobs(shadow)[name]
    return value


def settings_on_screen(values: dict[str, Any]) -> list[Any]:
    """Every setting of ``values`` as its widget shows it, in order (the shadow knobs read its mode)."""
    return [on_screen_value(name, value, values.get("shadow")) for name, value in values.items()]


def from_screen(values: dict[str, Any]) -> dict[str, Any]:
    """The widgets' values as request values: the generation size box's 0 is "the model's own" (null), and
    a shadow knob at its mode's own value is null, as in a request that leaves it out."""
    fields = values | {"resolution": values.get("resolution") or None}
    own = mode_knobs(values.get("shadow"))
    for name in SHADOW_KNOBS:
        value = values.get(name)
        if isinstance(value, (int, float)) and abs(value - own[name]) < 1e-9:
            fields[name] = None
    return fields
