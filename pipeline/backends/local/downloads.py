"""What a first load downloads from the Hugging Face hub, how big it is, and how far it has got.

diffusers and transformers fetch the weights themselves, with progress bars on a terminal nobody sees in
the studio. Here the hub is asked once which files a component needs and which of them are missing, and
while the component loads a watcher reports the hub cache's growth as ``Progress("load", ...)`` messages:
"Downloading diffusers/controlnet-canny-sdxl-1.0: 1.2 of 2.5 GB (48%)".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHTS = (".safetensors",)  # what diffusers and transformers pick when a repo has them
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Download:
    model_id: str
    files: tuple[str, ...]  # the repo's files still to fetch
    size: int  # their bytes


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"


def needed_files(siblings: list[tuple[str, int]], *, subfolder: str = "", variant: str | None = None,
                 pipeline_skips: tuple[str, ...] | None = None,
                 weight_name: str | None = None) -> list[tuple[str, int]]:
    """The weight files (name, size) a load takes from a repo listing: under ``subfolder``, ``weight_name``
    alone when given, else per folder the ``variant`` files where the folder has them and the plain ones
    where it does not. For a pipeline repo (``pipeline_skips`` given) the files at its root (single-file
    checkpoints) are not read, nor the folders of components passed in ready-made."""
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    if weight_name:
        return [(name, size) for name, size in siblings if name == prefix + weight_name]
    folders: dict[str, list[tuple[str, int]]] = {}
    for name, size in siblings:
        if not name.startswith(prefix) or not name.endswith(WEIGHTS):
            continue
        folder = name[len(prefix):].rpartition("/")[0]
        if pipeline_skips is not None and (folder == "" or folder.split("/")[0] in pipeline_skips):
            continue
        folders.setdefault(folder, []).append((name, size))
    chosen = []
    for files in folders.values():
        marked = [item for item in files if variant and f".{variant}." in item[0]]
        chosen += marked or [item for item in files if not any(f".{tag}." in item[0] for tag in ("fp16", "bf16"))]
    return chosen


def plan_download(model_id: str, **which: Any) -> Download | None:
    """What loading ``model_id`` will download (None: nothing, a local folder, offline, or the hub could not
    be asked; the load itself then says what is wrong)."""
    if Path(model_id).is_dir() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return None
    from huggingface_hub import HfApi, try_to_load_from_cache

    try:
        info = HfApi().model_info(model_id, files_metadata=True, timeout=10)
    except Exception:  # no network, a private repo, a typo: from_pretrained reports it properly
        return None
    siblings = [(file.rfilename, file.size or 0) for file in info.siblings or []]
    missing = [(name, size) for name, size in needed_files(siblings, **which)
               if not isinstance(try_to_load_from_cache(model_id, name), str)]
    if not missing:
        return None
    return Download(model_id, tuple(name for name, _ in missing), sum(size for _, size in missing))


def cache_bytes(model_id: str) -> int:
    """Bytes under the repo's hub cache folder (finished blobs and ``.incomplete`` ones being written)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    blobs = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=model_id, repo_type="model") / "blobs"
    total = 0
    with contextlib.suppress(OSError):
        for path in blobs.iterdir():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
    return total


@contextlib.contextmanager
def reporting_download(model_id: str, say: Callable[[str], None], **which: Any) -> Iterator[None]:
    """Around a component's load: say what it downloads and its size, then how far it has got, every
    couple of seconds, until the load returns. Silent when nothing is to be downloaded."""
    plan = plan_download(model_id, **which)
    if plan is None:
        yield
        return
    say(f"Downloading {model_id}: {len(plan.files)} file(s), {_gb(plan.size)} (first run only)")
    start, stop = cache_bytes(model_id), threading.Event()

    def watch() -> None:
        last = 0
        while not stop.wait(POLL_SECONDS):
            done = min(plan.size, max(0, cache_bytes(model_id) - start))
            if done != last:
                say(f"Downloading {model_id}: {_gb(done)} of {_gb(plan.size)} ({100 * done // max(1, plan.size)}%)")
                last = done

    watcher = threading.Thread(target=watch, name="backdrop-download-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
