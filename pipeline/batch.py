"""``python -m pipeline batch``: a whole catalogue, resumable, with a manifest of every item.

The manifest (``manifest.jsonl`` in the output folder) gets one JSON line per finished item, appended and
flushed as it finishes: a crash or Ctrl-C loses at most the item in flight, never a finished one, and a
rerun skips every item already done. Images are written under a temporary name and renamed, so no half
image ever carries a final name.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .cli import OneLineParser, add_request_flags, make_runner, request_values
from .errors import BackdropError
from .masking import find_product_ahead
from .outputs import check_out_folder, save_result, write_atomically
from .prepare import Reuse
from .request import FIELDS, BgReplaceRequest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_JOBS = 8
MANIFEST = "manifest.jsonl"


def build_batch_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m pipeline batch",
                           description="Replace the background of every product photo in a folder or glob.")
    parser.add_argument("inputs", help="A folder of product photos, or a quoted glob such as 'shots/**/*.jpg'.")
    parser.add_argument("--preset", help="A preset's name (see presets/); flags given here override it.")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help=f"Hosted calls at once (1..{MAX_JOBS}). Local work always runs one image at a time.")
    add_request_flags(parser, ref_required=False)
    return parser


def find_inputs(pattern: str) -> list[Path]:
    """Image files in a folder (not its subfolders), or matching a glob (``**`` recurses); sorted."""
    folder = Path(pattern).expanduser()
    paths = sorted(folder.iterdir()) if folder.is_dir() else sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    images = [path for path in paths if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise BackdropError(f"no product photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {pattern!r}", field="inputs")
    return images


class Manifest:
    """One row per input: the last line written for it wins. Appends are flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash: that item simply runs again
                if isinstance(row, dict) and "input" in row:
                    self.rows[row["input"]] = row
            self._compact()

    def _compact(self) -> None:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows.values())
        write_atomically(self.path, text.encode("utf-8"))

    def is_done(self, key: str) -> bool:
        row = self.rows.get(key)
        return bool(row and row.get("status") == "done" and all(Path(p).exists() for p in row.get("outputs", [])))

    def record(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.rows[row["input"]] = row
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
                file.flush()
                os.fsync(file.fileno())


def run_batch(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    inputs = find_inputs(args.inputs)
    if not 1 <= args.jobs <= MAX_JOBS:
        raise BackdropError(f"{args.jobs} is out of range; expected 1 to {MAX_JOBS}", field="jobs")
    base = _base_fields(args)
    out = Path(args.out)
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".*.part"):  # an image a killed run was writing: never given a final name
        leftover.unlink(missing_ok=True)
    manifest = Manifest(out / MANIFEST)
    todo = [path for path in inputs if not manifest.is_done(_key(path))]
    skipped = len(inputs) - len(todo)
    # Loads local models before the bar's clock starts; a rerun with nothing left to do loads nothing.
    runner = make_runner(args, lambda progress: None) if todo else None
    loaded = time.perf_counter()
    bar = _ProgressBar(len(todo), skipped, quiet=args.quiet)
    reuse = Reuse()  # the reference's and the prompt's embeddings serve every item
    work = lambda path: _process(path, base, runner, reuse, out)  # noqa: E731
    jobs = args.jobs if args.backend == "hosted" else 1
    if args.jobs > 1 and args.backend != "hosted" and not args.quiet:
        print("backdrop: --jobs applies to hosted calls; local images run one at a time on the GPU", file=sys.stderr)
    look_ahead = None
    if todo and not base.get("mask") and _generation_leaves_the_cpu_free(args):  # see _run_in_turn
        mask_model = base.get("mask_model", FIELDS["mask_model"].default)
        look_ahead = lambda path: find_product_ahead(path, mask_model)  # noqa: E731
    try:
        _run_all(todo, work, jobs, lambda row: (manifest.record(row), bar.advance(row)), look_ahead)
    except KeyboardInterrupt:
        bar.finish()
        print(f"backdrop: interrupted; {MANIFEST} holds every finished item, rerun the same command to resume",
              file=sys.stderr)
        return 130
    bar.finish()
    done = sum(1 for path in inputs if manifest.is_done(_key(path)))
    failed = len(inputs) - done
    finished = time.perf_counter()
    made = done - skipped
    per_image = ""
    if made:
        per_image = f" (start-up {loaded - started:.1f} s, then {(finished - loaded) / made:.1f} s per image)"
    print(f"backdrop: {made} done, {skipped} skipped (already done), {failed} failed, "
          f"{finished - started:.1f} s{per_image}; manifest: {manifest.path}", file=sys.stderr)
    return 1 if failed else 0


def _generation_leaves_the_cpu_free(args: argparse.Namespace) -> bool:
    """Whether masking the next photo alongside generation pays: yes while a GPU or the hosted API does the
    generating; no when generation itself runs on the CPU, where the two would only share its cores (a
    12-photo batch of the tiny models on 2 cores ran 5% slower with it)."""
    if args.backend == "hosted":
        return True
    from .models import resolve_runtime

    return resolve_runtime(args.device, args.dtype, args.memory_mode).device != "cpu"


def _base_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Preset, then flags; the reference decoded once; every value checked before the first image."""
    fields: dict[str, Any] = {}
    if args.preset:
        from .presets import get_preset

        preset = get_preset(args.preset)
        fields |= preset.settings
        if preset.reference:
            fields["ref_image"] = preset.reference
    fields |= request_values(args)
    if not fields.get("ref_image"):
        raise BackdropError("is required: give --ref (or a --preset that has a reference picture)", field="ref_image")
    if not fields.get("prompt"):
        raise BackdropError("is required: give --prompt", field="prompt")
    for name in list(fields):
        fields[name] = FIELDS[name].coerce(fields[name])
    return fields


def _key(path: Path) -> str:
    return str(path.resolve())


def _process(path: Path, base: dict[str, Any], runner: Callable[..., Any], reuse: Reuse, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    row: dict[str, Any] = {"input": _key(path), "outputs": [], "request": None, "seeds": [], "error": None}
    try:
        request = BgReplaceRequest.from_dict(base | {"image": path})
        row["request"] = request.settings()
        result = runner(request, reuse=reuse)
        row["outputs"] = [str(p) for p in save_result(result, out, stem=path.stem)]
        row |= {"status": "done", "seeds": list(result.seeds), "timings": result.timings}
    except BackdropError as error:
        row |= {"status": "failed", "error": str(error)}
    except Exception as error:  # one broken item must not stop a catalogue
        row |= {"status": "failed", "error": f"internal error: {type(error).__name__}: {error}"}
    finally:
        reuse.prepared.clear()  # each photo's mask is its own; keep only what items share
    row |= {"seconds": round(time.perf_counter() - started, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return row


def _run_all(paths: list[Path], work: Callable[[Path], dict], jobs: int, finished: Callable[[dict], Any],
             look_ahead: Callable[[Path], Any] | None = None) -> None:
    if jobs == 1:
        _run_in_turn(paths, work, finished, look_ahead)
        return
    with ThreadPoolExecutor(jobs) as pool:
        pending: set[Future] = set()
        queue = iter(paths)
        try:
            for path in queue:  # keep at most `jobs` calls in flight, so Ctrl-C abandons little
                pending.add(pool.submit(work, path))
                if len(pending) >= jobs:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        finished(future.result())
            for future in pending:
                finished(future.result())
        except KeyboardInterrupt:
            for future in pending:
                future.cancel()
            raise


def _run_in_turn(paths: list[Path], work: Callable[[Path], dict], finished: Callable[[dict], Any],
                 look_ahead: Callable[[Path], Any] | None) -> None:
    """One item after another, while a helper thread runs ``look_ahead`` on the next item: its mask is made
    on the CPU while this item generates on the GPU (or waits for the hosted API), instead of after it.
    Each item waits for its own look-ahead first, so no mask is made twice; a look-ahead that fails
    changes nothing (the item then finds and reports the problem itself)."""
    with ThreadPoolExecutor(1, thread_name_prefix="backdrop-look-ahead") as helper:
        ahead: Future | None = None
        for index, path in enumerate(paths):
            if ahead is not None:
                wait([ahead])
            following = paths[index + 1] if index + 1 < len(paths) else None
            ahead = helper.submit(look_ahead, following) if look_ahead and following else None
            finished(work(path))


class _ProgressBar:
    """``[12/50] 24% · 3.1 s/image · ETA 1m58s · 1 failed`` on stderr, redrawn in place on a terminal."""

    def __init__(self, total: int, skipped: int, *, quiet: bool) -> None:
        self.total, self.count, self.failed, self.quiet = total, 0, 0, quiet
        self.started = time.monotonic()
        self.interactive = sys.stderr.isatty()
        if skipped and not quiet:
            print(f"backdrop: skipping {skipped} item(s) already done", file=sys.stderr)

    def advance(self, row: dict[str, Any]) -> None:
        self.count += 1
        self.failed += row["status"] == "failed"
        if self.quiet:
            return
        per_image = (time.monotonic() - self.started) / self.count
        eta = per_image * (self.total - self.count)
        line = (f"[{self.count}/{self.total}] {100 * self.count // max(1, self.total)}% · {per_image:.1f} s/image · "
                f"ETA {int(eta // 60)}m{int(eta % 60):02d}s · {self.failed} failed · {Path(row['input']).name}")
        if row["status"] == "failed":
            line += f": {row['error']}"
        print(("\r" + line + "\033[K") if self.interactive else line, end="" if self.interactive else "\n",
              file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.interactive and not self.quiet and self.count:
            print(file=sys.stderr)
