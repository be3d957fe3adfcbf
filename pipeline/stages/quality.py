"""The quality check every image gets: four figures and a verdict, so a catalogue of thousands is not
read by a person image by image (README, "Quality check").

- ``expansion``: the mask model run again, on the output, finds product outside the input product's
  alpha (as placed in the output) grown by a few pixels; that area as a fraction of the product's own.
  It is the object-expansion measure of the background-generation literature, E = |m_out ∪ m_in| − |m_in|
  normalised by |m_in|: the model painted a taller bottle, a second strap, a reflection that reads as
  product. 0.1 is "a tenth more product than there was".
- ``mask_uncertainty``: the share of the input mask that is neither clearly product nor clearly
  background (a product the mask model was unsure of: glass, fur, a product the colour of its backdrop).
- ``product_change``: how much light match changed the product's own pixels, as a share of the 0-255 range
  (0 when it did not run).
- ``upscale``: how much the product was enlarged from the photo's pixels (1 = not at all).

Each has a threshold (request fields ``qa_max_*``); over any of them the verdict is ``review``, else ``ok``.
Every figure is deterministic for the same image (the ONNX mask model on the same pixels gives the same
mask), so the figures may be embedded in saved images without breaking byte-identical reruns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pipeline.contract.errors import BackdropError
from pipeline.stages.masking import mask_model_ready, mask_session, model_input

log = logging.getLogger("backdrop.quality")

# The input alpha is grown by this share of the mask model's side before the output's product is compared
# with it (3 px of u2netp's 320, 10 of BiRefNet's 1024): the model's edge wanders by about that much on an
# untouched product (soft edges, anti-aliasing, the resize to the model's square), which is not expansion.
GROW_SHARE = 0.01

# Mask values a mask model is sure of: at or above CLEAR_PRODUCT it is product, at or below
# CLEAR_BACKGROUND backdrop; between the two it hesitated.
CLEAR_PRODUCT = 230
CLEAR_BACKGROUND = 25

# The figures in the order they are shown, each with the request field holding its threshold.
THRESHOLD_FIELDS = {
    "expansion": "qa_max_expansion",
    "mask_uncertainty": "qa_max_mask_uncertainty",
    "product_change": "qa_max_product_change",
    "upscale": "qa_max_upscale",
}
VERDICTS = ("ok", "review")


def mask_uncertainty(raw_alpha: Image.Image) -> float:
    """The share of the product's mask (every pixel not clearly backdrop) that is not clearly product either."""
    counts = np.bincount(np.asarray(raw_alpha.convert("L")).ravel(), minlength=256)
    unsure = int(counts[CLEAR_BACKGROUND + 1:CLEAR_PRODUCT].sum())
    sure = int(counts[CLEAR_PRODUCT:].sum())
    return round(unsure / max(1, unsure + sure), 4)


def expansion(output: Image.Image, placed_alpha: Image.Image, mask_model: str) -> float:
    """How much product the mask model finds in ``output`` outside ``placed_alpha`` (grown by ``GROW_SHARE``
    of the model's side), as a fraction of the product's area. Compared at the mask model's own size:
    finer is not more accurate, since that is the size the model sees."""
    small = model_input(output.convert("RGB"), mask_model)
    # The session directly, not rembg.remove: no post-processing, and outputs never enter the photo mask cache.
    found = np.asarray(mask_session(mask_model).predict(small)[0].convert("L"))
    placed = cv2.resize(np.asarray(placed_alpha.convert("L")), (found.shape[1], found.shape[0]),
                        interpolation=cv2.INTER_AREA)
    product = placed >= 128
    grow = max(1, round(GROW_SHARE * max(found.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    allowed = cv2.dilate(product.astype(np.uint8), kernel).astype(bool)
    # Each piece of new product counts whole if any of it reaches past the grown edge: a taller bottle's
    # new top counts from the old edge, not from the grown one, while a sliver of edge wobble counts not at all.
    new = ((found >= 128) & ~product).astype(np.uint8)
    _, labels = cv2.connectedComponents(new, connectivity=8)
    reaching = np.unique(labels[(new > 0) & ~allowed])
    counted = np.isin(labels, reaching[reaching > 0])
    return round(float(counted.sum()) / max(1, int(product.sum())), 4)


def check_quality(output: Image.Image, placed_alpha: Image.Image, *, mask_model: str, thresholds: Mapping[str, float],
                  uncertainty: float, upscale: float, product_change: float = 0.0) -> dict[str, Any]:
    """The figures and the verdict for one image. ``expansion`` is None (and a note says why) where the mask
    model is not on this machine: the check never downloads one (a user's own mask needs none)."""
    figures: dict[str, Any] = {"expansion": None, "mask_uncertainty": round(uncertainty, 4),
                               "product_change": round(float(product_change), 4), "upscale": round(upscale, 3)}
    notes = []
    if mask_model_ready(mask_model):
        try:
            figures["expansion"] = expansion(output, placed_alpha, mask_model)
        except BackdropError as error:  # the model file is there but would not load
            log.warning("quality check: expansion not measured (%s)", error)
            notes.append(f"expansion not measured: {error}")
    else:
        notes.append(f"expansion not measured: mask model {mask_model!r} is not on this machine")
    return figures | verdict(figures, thresholds) | ({"notes": notes} if notes else {})


def verdict(figures: Mapping[str, Any], thresholds: Mapping[str, float]) -> dict[str, Any]:
    """``ok``, or ``review`` with each figure over its threshold named (``over``)."""
    over = [name for name, field in THRESHOLD_FIELDS.items()
            if figures.get(name) is not None and figures[name] > thresholds[field]]
    return {"verdict": "review" if over else "ok", "over": over}


def quality_summary(quality: Mapping[str, Any] | None) -> str:
    """One line for a person: the verdict, then each figure (those over their threshold marked).

    ``ok · expansion 0.2% · mask uncertainty 4.1% · upscale 1.0x`` or
    ``review (expansion) · expansion 18.0% over · ...``"""
    if not quality:
        return "not checked"
    over = set(quality.get("over", ()))
    head = quality.get("verdict", "ok") + (f" ({', '.join(quality['over'])})" if over else "")
    parts = [head]
    for name in THRESHOLD_FIELDS:
        value = quality.get(name)
        if value is None:
            shown = "not measured"
        elif name == "upscale":
            shown = f"{value:.1f}x"
        else:
            shown = f"{100 * value:.1f}%"
        if name == "product_change" and not value and name not in over:
            continue  # no light match ran: nothing to say
        parts.append(f"{name.replace('_', ' ')} {shown}" + (" over" if name in over else ""))
    return " · ".join(parts)


def quality_headers(qualities: list[Mapping[str, Any]]) -> dict[str, str]:
    """REST reply headers: each figure per image, comma-separated in image order (like x-seeds)."""
    def shown(value: Any) -> str:
        return "" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)

    headers = {"x-quality-verdict": ",".join(shown(quality.get("verdict")) for quality in qualities)}
    for name in THRESHOLD_FIELDS:
        headers[f"x-quality-{name.replace('_', '-')}"] = ",".join(shown(quality.get(name)) for quality in qualities)
    return headers
