"""Writing results to disk: atomically, never over an earlier result, with settings beside each image."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from pipeline.contract.errors import BackdropError
from pipeline.contract.result import BgReplaceResult
from pipeline.workflows.metadata import encode_with_metadata

EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}
_umask_lock = threading.Lock()


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place: a crash leaves no half file.
    The file gets the permissions any new file would (0666 less the umask), not the temporary's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), 0o666 & ~current_umask())
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (``os.umask`` sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


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
    paths = plan_paths(result, out_dir, stem)
    write_result(result, paths)
    return paths


def plan_paths(result: BgReplaceResult, out_dir: Path, stem: str = "backdrop") -> list[Path]:
    """The free names ``save_result`` would write (a batch records them before writing)."""
    extension = EXTENSIONS[result.request.output_format]
    paths: list[Path] = []
    for seed in result.seeds:
        path = _free_path(Path(out_dir) / f"{stem}_{seed}{extension}", taken=paths)
        paths.append(path)
    return paths


def write_result(result: BgReplaceResult, paths: list[Path]) -> None:
    """Each image to its path (settings embedded), each with its ``.json`` sidecar."""
    for index, (image, path) in enumerate(zip(result.images, paths)):
        metadata = result.metadata(index)
        # The image carries what remakes it, not how long this run took (that stays in the sidecar): the
        # same request and seed then give byte-identical files.
        embedded = {key: value for key, value in metadata.items() if key != "timings"}
        write_atomically(path, encode_with_metadata(image, result.request.output_format, embedded))
        sidecar = json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
        write_atomically(path.with_suffix(".json"), sidecar.encode("utf-8"))


def _free_path(path: Path, taken: Sequence[Path] = ()) -> Path:
    candidate, number = path, 1
    while candidate.exists() or candidate.with_suffix(".json").exists() or candidate in taken:
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return candidate
