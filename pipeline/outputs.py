"""Writing results to disk: atomically, never over an earlier result, with settings beside each image."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import BackdropError
from .metadata import encode_with_metadata
from .result import BgReplaceResult

EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place: a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_out_folder(folder: Path) -> None:
    """Refuse an ``--out`` that cannot hold results before any work is done, not after the images are made:
    it (or a folder above it) is a file, or is not writable."""
    folder = Path(folder)
    for existing in (folder, *folder.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            where = "is a file" if existing == folder else f"is inside {existing}, which is a file"
            raise BackdropError(f"{folder} {where}; give a folder for the results (it is made if missing)",
                                field="--out")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise BackdropError(f"cannot write into {existing}; give a folder you can write to", field="--out")
        return


def save_result(result: BgReplaceResult, out_dir: Path, stem: str = "backdrop") -> list[Path]:
    """Save every image as ``<stem>_<seed>.<ext>`` plus a ``.json`` sidecar; return the image paths.

    The settings (the full request, every seed, this image's seed, the model ids and the timings: enough
    to make the image again) go both into the image itself (PNG text chunk or JPEG comment) and into the
    sidecar. A name already taken gets a numeric suffix instead of being overwritten.
    """
    image_format = result.request.output_format
    paths = []
    for index, image in enumerate(result.images):
        path = _free_path(Path(out_dir) / f"{stem}_{result.seeds[index]}{EXTENSIONS[image_format]}")
        metadata = result.metadata(index)
        write_atomically(path, encode_with_metadata(image, image_format, metadata))
        sidecar = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
        write_atomically(path.with_suffix(".json"), sidecar.encode("utf-8"))
        paths.append(path)
    return paths


def _free_path(path: Path) -> Path:
    candidate, number = path, 1
    while candidate.exists() or candidate.with_suffix(".json").exists():
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return candidate
