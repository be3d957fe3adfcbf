"""The bad-input corpus: files a real user will one day upload, each with what Backdrop must answer.

    python tests/data/bad/make_corpus.py [FOLDER]     # writes the files (default: beside this script)

``CORPUS`` maps a file name to its expected outcome: an error text the message must contain, or "ok"
(decoded into a usable image). The tests build the files in a temporary folder with ``write_corpus``.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OK = "ok"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _photo(width: int = 160, height: int = 120) -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.full((height, width, 3), 250, np.uint8)
    base[height // 4: 3 * height // 4, width // 3: 2 * width // 3] = rng.integers(60, 200, 3, dtype=np.uint8)
    return Image.fromarray(base)


def _bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small valid PNG whose header claims width x height: a decompression bomb's calling card."""
    data = bytearray(_png(Image.new("RGB", (64, 64), "white")))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _rotated() -> bytes:
    """A landscape JPEG whose EXIF says 'rotate 90° clockwise to view': it must come out portrait."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(_photo(200, 120), exif=exif, quality=95)


def _animated() -> bytes:
    frames = [_photo(), Image.new("RGB", (160, 120), "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def _sixteen_bit() -> bytes:
    """The photo as a 16-bit greyscale PNG (scanners and raw converters write these)."""
    grey = np.asarray(_photo().convert("L"), dtype=np.uint16) * 257
    return _png(Image.fromarray(grey))


def corpus() -> dict[str, tuple[bytes, str]]:
    photo = _photo()
    png, jpeg = _png(photo), _jpeg(photo, quality=90)
    return {
        "zero-bytes.png": (b"", "the file is empty (0 bytes)"),
        "text-named.png": (b"this is a shopping list, not a picture\n", "not a readable image file"),
        "truncated.png": (png[: len(png) // 2], "truncated or corrupt"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "bomb-50000x50000.png": (_bomb(), "megapixels; the limit is"),
        "one-pixel.png": (_png(Image.new("RGB", (1, 1), "red")), "1x1 is too small"),
        "sixteen-bit.png": (_sixteen_bit(), OK),
        "cmyk.jpg": (_jpeg(photo.convert("CMYK")), OK),
        "palette.png": (_png(photo.convert("P")), OK),
        "grey-alpha.png": (_png(photo.convert("LA")), OK),
        "exif-rotated.jpg": (_rotated(), OK),
        "animated.gif": (_animated(), OK),
        "vector.svg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
                       "SVG is a vector format"),
    }


def write_corpus(folder: Path) -> dict[str, str]:
    """Write every file into ``folder``; return name -> expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (data, outcome) in corpus().items():
        (folder / name).write_bytes(data)
        expected[name] = outcome
    return expected


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for name, outcome in write_corpus(target).items():
        print(f"{name:24} {outcome}")
