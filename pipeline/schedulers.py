"""The hosted API's scheduler names, each mapped to its diffusers scheduler.

The names are plain data here so the UI and validation can list them without importing diffusers.
"""

from __future__ import annotations

from typing import Any

# name -> (diffusers class, extra config). "Karras" in a name means Karras sigmas.
_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "DDIM": ("DDIMScheduler", {}),
    "DPM Multi": ("DPMSolverMultistepScheduler", {}),
    "DPM Single": ("DPMSolverSinglestepScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
}

SCHEDULER_NAMES: tuple[str, ...] = tuple(_SCHEDULERS)
DEFAULT_SCHEDULER = "DPM2 Karras"

# Second-order solvers run the UNet about twice per step: worth telling a user who watches the clock.
SECOND_ORDER = frozenset({"DPM2 Karras", "DPM2 a Karras", "Heun"})


def canonical_scheduler_name(name: str) -> str | None:
    """The listed spelling of ``name`` (case and spacing forgiven), or None if it is not one of ours."""
    wanted = " ".join(name.split()).casefold()
    return next((known for known in SCHEDULER_NAMES if known.casefold() == wanted), None)


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """A fresh diffusers scheduler for ``name``, built on the pipeline's own scheduler config."""
    import diffusers

    class_name, overrides = _SCHEDULERS[name]
    scheduler_class = getattr(diffusers, class_name)
    return scheduler_class.from_config(base_config, **overrides)
