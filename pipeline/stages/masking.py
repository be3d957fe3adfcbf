"""Finding the product: rembg alpha (or the user's mask, or the image's own transparency) and the inpaint mask.

rembg is imported only when a mask is first needed: its first import compiles numba code for ~30 s,
which must not slow down starting the app or validating a request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np
from PIL import Image

from pipeline.contract.choices import MASK_MODELS
from pipeline.contract.errors import BackdropError, ModelLoadError
from pipeline.stages.compose import SOLID_ALPHA

log = logging.getLogger("backdrop.masking")


# The square each mask model sees (rembg stretches any photo to it). Shrinking the photo to exactly this
# ourselves, in one fast box reduction, spares rembg's Lanczos resizes of the full photo on the way in
# and of the mask on the way out: a tenth of the mask step at 1 MP, far more at 24 MP.
_MODEL_INPUT_SIDE = {"u2net": 320, "u2netp": 320, "silueta": 320}
_LARGE_MODEL_INPUT_SIDE = 1024  # BiRefNet and ISNet

# The U2Net family was exported with its bilinear upsamples in "pytorch_half_pixel" mode. ONNX Runtime's
# blocked-layout (NCHWc) CPU kernels take only "half_pixel", so each of u2netp's 38 upsamples left the
# fast layout and came back (107 reorders, ~10% of the run). The two modes differ only where an axis is
# resized to length 1, which never happens in these networks (their smallest upsample output is 20 px
# wide), so the rewritten model gives the same mask, faster (docs/PERFORMANCE.md).
_HALF_PIXEL_MODELS = ("u2net", "u2netp", "silueta")

_CLEAR_ALPHA = 5  # at or below this, a mask model's alpha is noise in the backdrop
# Snapping as a lookup table: one pass over a 24 MP mask instead of two comparisons and two selections.
_SNAP = np.where(np.arange(256) >= SOLID_ALPHA, 255, np.where(np.arange(256) <= _CLEAR_ALPHA, 0, np.arange(256)))
_SNAP = _SNAP.astype(np.uint8)

# Masks of recent photos, at most the model's input size each (<= 1 MB): 16 cost at most 16 MB.
MASK_CACHE_ENTRIES = 16
_mask_cache: OrderedDict[tuple[str, tuple[int, int], bytes], Image.Image] = OrderedDict()
_mask_cache_lock = threading.Lock()

_sessions: dict[str, Any] = {}
_sessions_lock = threading.Lock()


def mask_session(model_name: str) -> Any:
    """The rembg session for ``model_name``, created once per process and reused."""
    if model_name not in MASK_MODELS:
        raise BackdropError(
            f"{model_name!r} is unknown; expected one of {', '.join(MASK_MODELS)}", field="mask_model"
        )
    with _sessions_lock:
        if model_name not in _sessions:
            _sessions[model_name] = _new_session(model_name)
        return _sessions[model_name]


def _new_session(model_name: str) -> Any:
    import rembg

    try:
        session = rembg.new_session(model_name)
    except Exception as exc:  # rembg raises whatever its downloader raises when offline
        raise ModelLoadError(
            f"mask model {model_name!r} could not be loaded ({_load_failure(exc)}). "
            f"rembg downloads missing models on first use and finds them as $U2NET_HOME/{model_name}.onnx "
            f"or ~/.rembg/models/{model_name}/{model_name}.onnx: connect to the network once, copy the file "
            f"there, or choose another mask_model"
        ) from exc
    if model_name in _HALF_PIXEL_MODELS:
        _tune_u2net_session(session)
    return session


def _load_failure(exc: BaseException) -> str:
    """Why a mask model did not load, in a few words: "no network" for a download that could not connect
    (whose own text is a long chain of URLs and retries), else its text, cut at a word."""
    text = " ".join(str(exc).split())
    if (isinstance(exc, OSError)
        and any(sign in text for sign in ("NameResolution", "Max retries", "Failed to establish"))):
        return "the download failed: no network connection"
    return f"{type(exc).__name__}: " + (text if len(text) <= 200 else text[:200].rsplit(" ", 1)[0] + " …")


def _tune_u2net_session(session: Any) -> None:
    """Swap the rembg session's ONNX Runtime session for one on the half-pixel rewrite of its model, whose
    threads also stop spinning when a run ends: by default they busy-wait for more work for a while,
    taking the cores from the OpenCV and numpy steps that follow the mask (on 2 cores those steps ran
    ~25% slower, ~0.02 s of a 1024x1024 photo's preparation). If the rewrite fails (a model file of
    one's own that onnx cannot read), rembg's own session stays: slower, never wrong."""
    import onnxruntime

    inner = session.inner_session
    try:
        model = half_pixel_model(type(session).download_models())  # the file rembg just opened; no download
        options = inner.get_session_options()
        options.add_session_config_entry("session.force_spinning_stop", "1")
        session.inner_session = onnxruntime.InferenceSession(model, sess_options=options,
                                                             providers=inner.get_providers())
    except Exception as exc:  # an optimisation must never cost the user the mask itself
        log.warning("kept rembg's own %s session (%s: %s)", session.model_name, type(exc).__name__, exc)


def half_pixel_model(path: Any) -> bytes:
    """The ONNX model at ``path`` with every bilinear "pytorch_half_pixel" Resize made "half_pixel"."""
    import onnx

    model = onnx.load(path)
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        for attribute in node.attribute:
            if attribute.name == "coordinate_transformation_mode" and attribute.s == b"pytorch_half_pixel":
                attribute.s = b"half_pixel"
    return model.SerializeToString()


def mask_model_ready(model_name: str) -> bool:
    """Whether ``model_name`` can start without a download: opened already, or its file where rembg looks."""
    if model_name in _sessions:
        return True
    if model_name not in MASK_MODELS:
        return False
    from rembg.sessions import sessions_class

    session_class = next((cls for cls in sessions_class if cls.name() == model_name), None)
    return session_class is not None and session_class.resolve_existing(f"{model_name}.onnx") is not None


def find_product_ahead(source: Any, mask_model: str) -> None:
    """Run the mask model on a photo before a request asks for it (the studio on upload, a batch on the
    next photo while this one generates), so that request finds the mask remembered. Never downloads a
    mask model and never raises for a bad photo: the request itself reports that, naming the field."""
    from pipeline.contract.images import load_image

    if not mask_model_ready(mask_model):
        return
    with contextlib.suppress(BackdropError):  # a bad photo is for Generate to report, with its field
        subject_alpha(load_image(source, field="image"), mask_model=mask_model)


def subject_alpha(
    image: Image.Image, *, mask_model: str, user_mask: Image.Image | None = None
) -> tuple[Image.Image, str]:
    """The product's soft alpha (L, 255 = product) at the image's size, and where it came from."""
    if user_mask is not None:
        return _fit_user_mask(user_mask, image.size), "user mask"
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255:
        return image.getchannel("A"), "image transparency"
    return _rembg_alpha(image, mask_model), mask_model


def model_input(image: Image.Image, mask_model: str) -> Image.Image:
    """``image`` as ``mask_model`` sees it: shrunk to the model's square, never enlarged."""
    side = _MODEL_INPUT_SIDE.get(mask_model, _LARGE_MODEL_INPUT_SIDE)
    if min(image.size) <= side:  # a small photo goes in as it is
        return image
    return image.resize((side, side), Image.Resampling.BOX, reducing_gap=2.0)


def _rembg_alpha(image: Image.Image, mask_model: str) -> Image.Image:
    small = model_input(image, mask_model)
    alpha = _model_alpha(small.convert("RGB"), mask_model)
    if alpha.size != image.size:
        resized = cv2.resize(np.asarray(alpha), image.size, interpolation=cv2.INTER_CUBIC)
        alpha = Image.fromarray(resized, mode="L")
    if alpha.getextrema()[1] < 128:
        raise BackdropError(
            f"the mask model {mask_model!r} found no product in this photo; "
            "try another mask_model or supply your own mask",
            field="image",
        )
    return alpha


def _model_alpha(small: Image.Image, mask_model: str) -> Image.Image:
    """The mask model's answer for the (shrunk) photo, remembered: a photographer reruns the same photo with
    a new prompt or seed far more often than not, and the mask is the slow part of preparing it on a CPU
    (u2netp ~0.35 s, the default BiRefNet seconds). Keyed by the pixels the model sees, so any edit to the
    photo is a new entry; the model's output is deterministic, so a hit is exactly what a rerun would give."""
    import rembg

    key = (mask_model, small.size, hashlib.blake2b(small.tobytes(), digest_size=16).digest())
    with _mask_cache_lock:
        if key in _mask_cache:
            _mask_cache.move_to_end(key)
            return _mask_cache[key].copy()
    alpha = rembg.remove(small, session=mask_session(mask_model), only_mask=True)
    with _mask_cache_lock:
        _mask_cache[key] = alpha.copy()
        while len(_mask_cache) > MASK_CACHE_ENTRIES:
            _mask_cache.popitem(last=False)
    return alpha


def clear_mask_cache() -> None:
    """Forget every remembered mask (benchmarks use this to time the first request for a photo)."""
    with _mask_cache_lock:
        _mask_cache.clear()


def _fit_user_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A user's mask as L: its transparency if it is a cut-out, else its brightness; resized if needed."""
    alpha = mask.getchannel("A") if mask.mode == "RGBA" else None
    gray = alpha if alpha is not None and alpha.getextrema()[0] < 255 else mask.convert("L")
    if gray.size == size:
        return gray
    mask_ratio, image_ratio = gray.width / gray.height, size[0] / size[1]
    if abs(mask_ratio - image_ratio) > 0.01 * image_ratio:
        raise BackdropError(
            f"{gray.width}x{gray.height} does not have the image's shape ({size[0]}x{size[1]})",
            field="mask",
        )
    return gray.resize(size, Image.Resampling.BILINEAR)


def refine_alpha(alpha: Image.Image, *, grow: int = 0, feather: int = 0) -> Image.Image:
    """Grow (+) or shrink (-) the product area and soften its edge, both in pixels of ``alpha``.

    Mask models rarely say a flat 255 inside the product or 0 far from it; near-certain values are
    snapped first, so the product's interior is kept exactly and faint specks in the backdrop vanish.
    """
    values = cv2.LUT(np.asarray(alpha.convert("L")), _SNAP)
    if grow:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
        values = cv2.dilate(values, kernel) if grow > 0 else cv2.erode(values, kernel)
    if feather:
        values = cv2.GaussianBlur(values, (2 * feather + 1, 2 * feather + 1), sigmaX=feather / 2)
    if values.max() < 128:
        raise BackdropError("shrinks the product away entirely; use a smaller value", field="mask_grow")
    return Image.fromarray(np.ascontiguousarray(values), mode="L")


def inpaint_mask(alpha: Image.Image, *, halo: int) -> Image.Image:
    """White where the background is regenerated: everything but the solid product, reaching ``halo``
    pixels into it, so every soft edge pixel gets freshly generated background underneath and none of the
    old backdrop can show through when the product is laid back on top."""
    solid = (np.asarray(alpha) >= SOLID_ALPHA).astype(np.uint8)
    if halo > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * halo + 1, 2 * halo + 1))
        solid = cv2.erode(solid, kernel)
    return Image.fromarray((1 - solid) * 255, mode="L")
