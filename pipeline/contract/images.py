"""Turning whatever a caller hands us (a path, bytes, base64, a PIL image, an array) into a clean image.

Every failure becomes a ``BackdropError`` naming the field, so a zero-byte upload, a truncated JPEG or a
decompression bomb reads as a sentence, never as a PIL traceback.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.contract.errors import BackdropError
from pipeline.contract.settings import setting

MIN_SIDE = 64

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def max_pixels() -> int:
    """The pixel limit, read on each call so ``BACKDROP_MAX_PIXELS`` can be changed by a deployment."""
    return setting("BACKDROP_MAX_PIXELS")


def load_image(source: Any, *, field: str = "image") -> Image.Image:
    """Decode ``source`` into an upright RGB or RGBA image, or raise ``BackdropError`` naming ``field``.

    Accepted: ``PIL.Image.Image``, ``numpy`` arrays, ``bytes``, ``os.PathLike`` (a file to read) and
    ``str`` holding base64 data (with or without a ``data:image/...;base64,`` prefix). A plain ``str`` is
    never treated as a path, so text that arrives over HTTP cannot make us read local files.
    """
    if isinstance(source, Image.Image):
        return _check_size(normalize_mode(source), field)
    if isinstance(source, np.ndarray):
        return _check_size(normalize_mode(_array_to_image(source, field)), field)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(source), field=field)
    if isinstance(source, os.PathLike):
        return decode_image_bytes(_read_file(Path(source), field), field=field)
    if isinstance(source, str):
        return decode_image_bytes(_decode_base64(source, field), field=field)
    raise BackdropError(
        f"expected an image (file, bytes or base64 text), got {type(source).__name__}", field=field
    )


def decode_image_bytes(data: bytes, *, field: str = "image") -> Image.Image:
    if not data:
        raise BackdropError("the file is empty (0 bytes)", field=field)
    if _looks_like_svg(data):
        raise BackdropError("SVG is a vector format; export it as PNG or JPEG first", field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixel_limit(image.size, field)
            image.load()
    except BackdropError:
        raise
    except Image.DecompressionBombError as bomb:  # PIL refuses before we see the size; its message has it
        claimed = re.search(r"\((\d+) pixels\)", str(bomb))
        raise BackdropError(_too_many_pixels_message(int(claimed.group(1)) if claimed else None), field=field) from None
    except UnidentifiedImageError:
        raise BackdropError(
            "not a readable image file; use JPEG, PNG, WebP, BMP, TIFF or GIF", field=field
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BackdropError(f"the file is truncated or corrupt ({_short(exc)})", field=field) from None
    return _check_size(normalize_mode(_upright(image)), field)


def normalize_mode(image: Image.Image) -> Image.Image:
    """8-bit RGB, or RGBA when the image carries transparency; other modes (CMYK, 16-bit, palette) converted."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    has_alpha = image.mode in ("LA", "La", "PA", "RGBa") or (
        image.mode == "P" and "transparency" in image.info
    )
    return image.convert("RGBA" if has_alpha else "RGB")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Flatten transparency onto ``background`` (white: what a product shot's backdrop usually is)."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, background)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def encode_image(image: Image.Image, image_format: str = "png", *, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    if image_format.lower() in ("jpeg", "jpg"):
        to_rgb(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a corrupt EXIF block should not cost the user the picture
        return image


def _check_pixel_limit(size: tuple[int, int], field: str) -> None:
    if size[0] * size[1] > max_pixels():
        raise BackdropError(_too_many_pixels_message(size[0] * size[1], size), field=field)


def _too_many_pixels_message(pixels: int | None, size: tuple[int, int] | None = None) -> str:
    limit = f"the limit is {max_pixels() / 1e6:g} megapixels (BACKDROP_MAX_PIXELS)"
    if pixels is None:
        return f"the image is too large; {limit}"
    shape = f"{size[0]}x{size[1]} is " if size else "the image has "
    return f"{shape}{pixels / 1e6:.1f} megapixels; {limit}"


def _check_size(image: Image.Image, field: str) -> Image.Image:
    _check_pixel_limit(image.size, field)
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise BackdropError(
            f"{width}x{height} is too small; each side must be at least {MIN_SIDE} pixels", field=field
        )
    return image


def _read_file(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BackdropError(f"no such file: {path}", field=field) from None
    except IsADirectoryError:
        raise BackdropError(f"{path} is a folder, not an image file", field=field) from None
    except OSError as exc:
        raise BackdropError(f"cannot read {path}: {exc.strerror or exc}", field=field) from None


def _decode_base64(text: str, field: str) -> bytes:
    stripped = text.strip()
    if stripped.lower().startswith(("http://", "https://")):
        raise BackdropError("image URLs are not accepted here; send the image as base64", field=field)
    payload = _DATA_URL.sub("", stripped, count=1)
    payload = re.sub(r"\s+", "", payload)
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        hint = " (to read a file, pass a pathlib.Path)" if len(stripped) < 260 and "." in stripped else ""
        raise BackdropError(f"not valid base64 image data{hint}", field=field) from None


def _array_to_image(array: np.ndarray, field: str) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise BackdropError(f"an image array must be HxW, HxWx3 or HxWx4, got {array.shape}", field=field)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(_to_uint8(array))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    values = np.nan_to_num(array.astype(np.float64))
    if np.issubdtype(array.dtype, np.floating) and values.max(initial=0) <= 1.0:
        values = values * 255.0
    elif values.max(initial=0) > 255:
        values = values / 257.0  # 16-bit range onto 8-bit
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _looks_like_svg(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower())


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."
