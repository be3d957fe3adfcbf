"""Decoding every kind of image a user may hand us, and a clear error for the ones we cannot use."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline import BackdropError, BgReplaceRequest
from pipeline.contract.images import encode_image, load_image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims ``width``x``height``: what a decompression bomb looks like."""
    data = bytearray(png_bytes(Image.new("RGB", (64, 64), "white")))
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4:ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))


def test_every_source_kind_decodes_to_the_same_pixels(tmp_path, photo):
    raw = png_bytes(photo)
    path = tmp_path / "photo.png"
    path.write_bytes(raw)
    b64 = base64.b64encode(raw).decode()
    sources = [photo, np.asarray(photo), raw, path, b64, f"data:image/png;base64,{b64}", b64[:40] + "\n" + b64[40:]]
    for source in sources:
        assert np.array_equal(np.asarray(load_image(source)), np.asarray(photo)), type(source)


def test_unreadable_file_names_the_field(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(BackdropError, match="^image: not a readable image file; use JPEG, PNG"):
        load_image(text)
    with pytest.raises(BackdropError, match="^ref_image: no such file: .*missing.jpg"):
        load_image(tmp_path / "missing.jpg", field="ref_image")
    with pytest.raises(BackdropError, match="is a folder, not an image file"):
        load_image(tmp_path)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_truncated_files_are_reported_as_truncated(photo, image_format):
    buffer = io.BytesIO()
    photo.save(buffer, format=image_format)
    data = buffer.getvalue()
    with pytest.raises(BackdropError, match="^image: the file is truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(BackdropError, match=r"^image: the file is empty \(0 bytes\)"):
        load_image(empty)


def test_tiny_images_are_refused():
    with pytest.raises(BackdropError, match="^image: 1x1 is too small; each side must be at least 64 pixels"):
        load_image(png_bytes(Image.new("RGB", (1, 1))))


def test_images_over_the_pixel_limit_are_refused_before_decoding():
    with pytest.raises(BackdropError, match=r"^image: the image has 2500\.0 megapixels; the limit is 64 megapixels"):
        load_image(png_claiming_size(50_000, 50_000))
    with pytest.raises(BackdropError, match=r"^image: 9000x8000 is 72\.0 megapixels; the limit is 64 megapixels"):
        load_image(png_claiming_size(9000, 8000))


def test_pixel_limit_is_configurable(monkeypatch, photo):
    monkeypatch.setenv("BACKDROP_MAX_PIXELS", "10000")
    with pytest.raises(BackdropError, match="160x120 is 0.0 megapixels; the limit is 0.01 megapixels"):
        load_image(photo)


def test_bad_base64_and_urls_are_explained():
    with pytest.raises(BackdropError,
                       match=r"^image: not valid base64 image data \(to read a file, pass a pathlib.Path\)"):
        load_image("photo.jpg")
    with pytest.raises(BackdropError, match="^image: image URLs are not accepted here"):
        load_image("https://example.com/a.jpg")


def test_svg_gets_its_own_hint():
    with pytest.raises(BackdropError, match="SVG is a vector format"):
        load_image(b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>')


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (200, 100), "red")
    wide.paste(Image.new("RGB", (100, 100), "blue"), (0, 0))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    buffer = io.BytesIO()
    wide.save(buffer, format="JPEG", exif=exif, quality=95)
    upright = load_image(buffer.getvalue())
    assert upright.size == (100, 200)
    top = np.asarray(upright)[:50].mean(axis=(0, 1))
    assert top[2] > 200 and top[0] < 60  # the blue half is now on top


def test_modes_are_normalised():
    cmyk = Image.new("CMYK", (80, 80), (0, 255, 255, 0))
    assert load_image(png_bytes(cmyk.convert("RGB"))).mode == "RGB"
    buffer = io.BytesIO()
    cmyk.save(buffer, format="JPEG")
    assert load_image(buffer.getvalue()).mode == "RGB"
    sixteen = Image.fromarray(np.full((80, 80), 65535, dtype=np.uint16))
    decoded = load_image(png_bytes(sixteen))
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == (255, 255, 255)
    assert load_image(png_bytes(Image.new("LA", (80, 80), (10, 128)))).mode == "RGBA"
    palette = Image.new("P", (80, 80))
    assert load_image(png_bytes(palette)).mode == "RGB"


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (80, 80), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    first = load_image(buffer.getvalue()).convert("RGB")
    assert first.getpixel((10, 10))[0] > 200


def test_request_reports_image_errors_by_field(photo):
    with pytest.raises(BackdropError, match="^ref_image: the file is empty"):
        BgReplaceRequest(image=photo, ref_image=b"", prompt="x")
    with pytest.raises(BackdropError, match="^mask: 1x1 is too small"):
        BgReplaceRequest(image=photo, ref_image=photo, prompt="x", mask=Image.new("L", (1, 1)))


def test_encode_image_round_trips(photo):
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(photo, "png")))), np.asarray(photo))
    assert Image.open(io.BytesIO(encode_image(photo.convert("RGBA"), "jpeg"))).format == "JPEG"
