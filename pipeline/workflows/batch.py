"""``python -m pipeline batch``: a whole catalogue, resumable, with a manifest of every item.

The manifest (``manifest.jsonl`` in the output folder) gets one JSON line per finished item, appended and
flushed as it finishes: a crash or Ctrl-C loses at most the item in flight, never a finished one, and a
rerun skips every item already done. Images are written under a temporary name and renamed, so no half
image ever carries a final name.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pipeline.interfaces.cli import OneLineParser, add_request_flags, make_runner, request_values
from pipeline.contract.errors import BackdropError
from pipeline.stages.masking import find_product_ahead
from pipeline.workflows.outputs import check_out_folder, plan_paths, write_atomically, write_result
from pipeline.stages.reuse import Reuse
from pipeline.contract.request import FIELDS, IMAGE_FIELDS, BgReplaceRequest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_JOBS = 8
MANIFEST = "manifest.jsonl"


def build_batch_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m pipeline batch",
                           description="Replace the background of every product photo in a folder or glob, "
                                       "or of every row of an --items file.")
    parser.add_argument("inputs", nargs="?",
                        help="A folder of product photos, or a quoted glob such as 'shots/**/*.jpg'.")
    parser.add_argument("--items", type=Path, metavar="FILE",
                        help="A .csv or .jsonl file: one row per product, its image and any request field "
                             "(prompt, ref_image, seed, preset, ...); flags give the rest.")
    parser.add_argument("--preset", help="A preset's name (see presets/); flags given here override it.")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help=f"Hosted calls at once (1..{MAX_JOBS}). Local work always runs one image at a time.")
    parser.add_argument("--redo", action="store_true",
                        help="Make items already in --out again when their settings changed (their old images "
                             "are replaced); without it such a rerun is refused.")
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


def input_root(pattern: str) -> Path:
    """The folder a pattern's matches are relative to: the folder itself, or a glob's part before its first
    wildcard (``shots/**/*.jpg`` -> ``shots``). Results mirror the folders below it."""
    folder = Path(pattern).expanduser()
    if folder.is_dir():
        return Path(os.path.abspath(folder))
    fixed = []
    for part in Path(pattern).expanduser().parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(os.path.abspath(Path(*fixed) if fixed else Path.cwd()))


@dataclass(frozen=True)
class Item:
    """One product to make: its photo, where its results go and the request fields it is made with."""

    path: Path
    relative: Path  # the photo's path below the input folder: its results go to the same folders under --out
    key: str  # the manifest's name for it
    fields: dict[str, Any]  # checked request fields, all but the image
    made_with: dict[str, Any]  # what the manifest records, and what a rerun compares
    label: str  # what progress lines show


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
            self.compact()

    def compact(self) -> None:
        """Rewrite the file with one line per item (its last), dropping superseded and torn lines."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows.values())
        write_atomically(self.path, text.encode("utf-8"))

    def is_done(self, key: str) -> bool:
        row = self.rows.get(key)
        return bool(row and row.get("status") == "done" and all(Path(p).exists() for p in row.get("outputs", [])))

    def remove_unfinished_writes(self) -> int:
        """Delete the images of items a killed run was writing (recorded as "writing", never "done"): the
        rerun makes them again under the same names, so no item ever ends up with two sets of images."""
        return sum(remove_outputs(row.get("outputs", [])) for row in self.rows.values()
                   if row.get("status") == "writing")

    def record(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.rows[row["input"]] = row
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
                file.flush()
                os.fsync(file.fileno())


def remove_outputs(outputs: list[str]) -> int:
    """Delete an item's images and their sidecars; return how many files there were."""
    removed = 0
    for output in outputs:
        for path in (Path(output), Path(output).with_suffix(".json")):
            removed += path.exists()
            path.unlink(missing_ok=True)
    return removed


def run_batch(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if not 1 <= args.jobs <= MAX_JOBS:
        raise BackdropError(f"{args.jobs} is out of range; expected 1 to {MAX_JOBS}", field="jobs")
    out = Path(args.out)
    check_out_folder(out)
    items = plan_items(args, out)  # every photo found and every value checked before the first image
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.rglob(".*.part"):  # an image a killed run was writing: never given a final name
        leftover.unlink(missing_ok=True)
    manifest = Manifest(out / MANIFEST)
    manifest.remove_unfinished_writes()
    todo = items_to_make(items, manifest, out, redo=args.redo)
    skipped = len(items) - len(todo)
    _announce(args, items, todo, out)
    # Loads local models before the bar's clock starts; a rerun with nothing left to do loads nothing.
    runner = make_runner(args, _load_printer(args.quiet)) if todo else None
    loaded = time.perf_counter()
    bar = _ProgressBar(len(todo), skipped, quiet=args.quiet)
    reuse = Reuse()  # the references' and the prompts' embeddings serve every item that shares them
    writer = _Writer(manifest, out)
    work = lambda item: _process(item, runner, reuse, writer)  # noqa: E731
    jobs = args.jobs if args.backend == "hosted" else 1
    if args.jobs > 1 and args.backend != "hosted" and not args.quiet:
        print("backdrop: --jobs applies to hosted calls; local images run one at a time on the GPU", file=sys.stderr)
    look_ahead = None
    if todo and _generation_leaves_the_cpu_free(args):  # see _run_in_turn
        look_ahead = lambda item: None if item.fields.get("mask") else find_product_ahead(  # noqa: E731
            item.path, item.fields.get("mask_model") or FIELDS["mask_model"].current_default())
    try:
        _run_all(todo, work, jobs, lambda row: (manifest.record(row), bar.advance(row)), look_ahead)
    except KeyboardInterrupt:
        bar.finish()
        manifest.compact()
        print(f"backdrop: interrupted; {MANIFEST} holds every finished item, rerun the same command to resume",
              file=sys.stderr)
        return 130
    bar.finish()
    manifest.compact()  # one line per item again: each made item's "writing" line is superseded by its result
    done = sum(1 for item in items if manifest.is_done(item.key))
    failed = len(items) - done
    finished = time.perf_counter()
    made = done - skipped
    per_image = ""
    if made:
        per_image = f" (start-up {loaded - started:.1f} s, then {(finished - loaded) / made:.1f} s per image)"
    print(f"backdrop: {made} done, {skipped} skipped (already done), {failed} failed, "
          f"{finished - started:.1f} s{per_image}; manifest: {manifest.path}", file=sys.stderr)
    return 1 if failed else 0


def plan_items(args: argparse.Namespace, out: Path) -> list[Item]:
    """The photos to make, from a folder/glob or an --items file, each with its checked request fields."""
    if bool(args.inputs) == bool(args.items):
        raise BackdropError("give a folder or glob of product photos, or --items FILE (not both)", field="inputs")
    base = _base_fields(args)
    decoded: dict[Any, Any] = {}  # each reference and mask file decoded once, shared by every item using it
    if args.items:
        return _items_from_file(args, base, decoded)
    root = input_root(args.inputs)
    out_folder = Path(os.path.abspath(out))
    if out_folder == root:
        raise BackdropError(f"{out} is the input folder itself: its results would be read as photos on the next run; "
                            "give a folder beside or inside it", field="--out")
    paths = find_inputs(args.inputs)  # no photos at all is the first thing to say
    fields = _checked_fields(base, decoded)
    results_inside_inputs = out_folder.is_relative_to(root)
    items = []
    for path in paths:
        absolute = Path(os.path.abspath(path))
        if results_inside_inputs and absolute.is_relative_to(out_folder):
            continue  # an earlier run's result inside the input folder is not a product photo
        relative = _below(path, root)
        items.append(_item(path, relative, _key(path), fields, base, args, str(relative)))
    if not items:
        raise BackdropError(f"no product photos in {args.inputs!r} outside --out", field="inputs")
    return items


def _items_from_file(args: argparse.Namespace, base: dict[str, Any], decoded: dict[Any, Any]) -> list[Item]:
    from pipeline.workflows.items import read_items
    from pipeline.workflows.presets import get_preset

    source = Path(args.items)
    folder = Path(os.path.abspath(source.parent))  # paths in the file are relative to it
    items, seen = [], collections.Counter()
    for row in read_items(source):
        where = row.where(source)
        try:
            fields = dict(base)
            if row.values.get("preset"):
                preset = get_preset(str(row.values["preset"]))
                fields |= preset.settings | ({"ref_image": preset.reference} if preset.reference else {})
            fields |= {name: value for name, value in row.values.items() if name not in ("image", "preset")}
            checked = _checked_fields(fields, decoded)
        except BackdropError as error:
            raise BackdropError(f"{where}: {error}", field="--items") from None
        path = row.values["image"]
        photo = _key(path)
        seen[photo] += 1  # one photo may appear in several rows (other prompts): each is its own item
        key = photo + (f"#{seen[photo]}" if seen[photo] > 1 else "")
        relative = _below(path, folder)
        items.append(_item(path, relative, key, checked, fields, args, f"row {row.number} {relative}"))
    return items


def _item(path: Path, relative: Path, key: str, checked: dict[str, Any], raw: dict[str, Any],
          args: argparse.Namespace, label: str) -> Item:
    settings = {name: checked.get(name, FIELDS[name].default) for name in FIELDS if name not in IMAGE_FIELDS}
    made_with = {"settings": settings, "ref_image": _fingerprint(raw.get("ref_image")),
                 "mask": _fingerprint(raw.get("mask")), "backend": args.backend,
                 "model_set": args.model_set if args.backend == "local" else None}
    return Item(Path(path), relative, key, checked, made_with, label)


def _fingerprint(value: Any) -> str | None:
    """What identifies a reference or mask file across runs: its bytes' hash (a new picture under the old
    name is a change)."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)) and Path(value).is_file():
        return _file_hash(str(Path(value).resolve()))
    return str(value)


@functools.lru_cache(maxsize=256)  # one reference serves a whole catalogue: read it once, not per item
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def items_to_make(items: list[Item], manifest: Manifest, out: Path, *, redo: bool) -> list[Item]:
    """Items not yet done. An item done with other settings is made again only with --redo: a rerun with a
    new prompt or reference must never skip it silently as if it were done."""
    todo, changed = [], []
    for item in items:
        if not manifest.is_done(item.key):
            todo.append(item)
            continue
        differences = _differences(manifest.rows[item.key], item.made_with)
        if differences:
            changed.append((item, differences))
            todo.append(item)
    if changed and not redo:
        item, differences = changed[0]
        raise BackdropError(
            f"{len(changed)} item(s) in {out} were made with other settings ({'; '.join(differences)}, e.g. for "
            f"{item.label}); give a new --out to keep both, or add --redo to make them again with these settings",
            field="--out")
    return todo


def _differences(row: dict[str, Any], made_with: dict[str, Any]) -> list[str]:
    """What differs from the manifest's record, in words; a row from before records were kept has only its
    request, which is compared alone."""
    recorded = row.get("made_with") or {"settings": row.get("request") or {}}
    before, after = recorded.get("settings", {}), made_with["settings"]
    differences = [f"{name}: {before.get(name)!r} -> {after[name]!r}" for name in after
                   if name in before and before[name] != after[name]]
    for name, what in (("ref_image", "another reference picture"), ("mask", "another mask"),
                       ("backend", "another backend"), ("model_set", "another model set")):
        if name in recorded and recorded[name] != made_with[name]:
            differences.append(f"{name}: {what}")
    return differences


def _announce(args: argparse.Namespace, items: list[Item], todo: list[Item], out: Path) -> None:
    """Say what is about to happen before the first (slow) step, instead of nothing until an image ends."""
    if args.quiet:
        return
    source = args.items or args.inputs
    where = "the hosted API" if args.backend == "hosted" else f"the {args.model_set} models"
    print(f"backdrop: {len(items)} item(s) from {source}, {len(items) - len(todo)} already done in {out}; "
          + (f"loading {where}..." if todo else "nothing left to do"), file=sys.stderr, flush=True)


def _load_printer(quiet: bool) -> Callable[[Any], None]:
    def say(progress: Any) -> None:
        if not quiet and progress.stage == "load":
            print(f"backdrop: {progress.message}", file=sys.stderr, flush=True)

    return say


def _generation_leaves_the_cpu_free(args: argparse.Namespace) -> bool:
    """Whether masking the next photo alongside generation pays: yes while a GPU or the hosted API does the
    generating; no when generation itself runs on the CPU, where the two would only share its cores (a
    12-photo batch of the tiny models on 2 cores ran 5% slower with it)."""
    if args.backend == "hosted":
        return True
    from pipeline.backends.local.models import resolve_runtime

    return resolve_runtime(args.device, args.dtype, args.memory_mode).device != "cpu"


def _base_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's settings and reference, then the flags: what every item starts from."""
    fields: dict[str, Any] = {}
    if args.preset:
        from pipeline.workflows.presets import get_preset

        preset = get_preset(args.preset)
        fields |= preset.settings
        if preset.reference:
            fields["ref_image"] = preset.reference
    return fields | request_values(args)


def _checked_fields(fields: dict[str, Any], decoded: dict[Any, Any]) -> dict[str, Any]:
    """Every value checked (and each reference decoded once, into ``decoded``) before the first image."""
    if not fields.get("ref_image"):
        raise BackdropError("is required: give --ref (or a --preset that has a reference picture)", field="ref_image")
    if not fields.get("prompt"):
        raise BackdropError("is required: give --prompt", field="prompt")
    checked = {}
    for name, value in fields.items():
        if FIELDS[name].kind == "image" and isinstance(value, (str, Path)):
            cache_key = (name, str(value))
            if cache_key not in decoded:
                decoded[cache_key] = FIELDS[name].coerce(value)
            checked[name] = decoded[cache_key]
        else:
            checked[name] = FIELDS[name].coerce(value)
    return checked


def _below(path: Path, folder: Path) -> Path:
    """``path`` relative to ``folder`` (its results go to the same subfolders under --out), or its bare name
    when it lies elsewhere."""
    absolute = Path(os.path.abspath(path))
    return absolute.relative_to(folder) if absolute.is_relative_to(folder) else Path(Path(path).name)


def _key(path: Path) -> str:
    return str(Path(path).resolve())


class _Writer:
    """Records an item's file names as "writing" before writing them, and "done" after: a run killed in
    between leaves a record of exactly which files to remove (never another item's, never the user's)."""

    def __init__(self, manifest: Manifest, out: Path) -> None:
        self.manifest, self.out = manifest, out
        self._lock = threading.Lock()  # two items with one name (front.jpg, front.png) must not pick one path

    def save(self, item: Item, result: Any) -> list[Path]:
        with self._lock:
            old = self.manifest.rows.get(item.key, {})
            if old.get("status") == "done":  # --redo: the old images go, the new ones take their place
                remove_outputs(old.get("outputs", []))
            folder = self.out / item.relative.parent
            paths = plan_paths(result, folder, stem=item.relative.stem)
            self.manifest.record({"input": item.key, "status": "writing", "outputs": [str(p) for p in paths]})
            write_result(result, paths)
        return paths


def _process(item: Item, runner: Callable[..., Any], reuse: Reuse, writer: _Writer) -> dict[str, Any]:
    started = time.perf_counter()
    row: dict[str, Any] = {"input": item.key, "item": item.label, "outputs": [], "request": None, "seeds": [],
                           "error": None, "made_with": item.made_with}
    try:
        request = BgReplaceRequest.from_dict(item.fields | {"image": item.path})
        row["request"] = request.settings()
        result = runner(request, reuse=reuse)
        row["outputs"] = [str(p) for p in writer.save(item, result)]
        row |= {"status": "done", "seeds": list(result.seeds), "timings": result.timings}
        # Framing: where the product landed, so a catalogue's boxes can be checked from the manifest alone.
        row |= {key: result.info[key] for key in ("product_box", "scale", "enlarged") if key in result.info}
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
                f"ETA {int(eta // 60)}m{int(eta % 60):02d}s · {self.failed} failed · {row['item']}")
        if row["status"] == "failed":
            line += f": {row['error']}"
        print(("\r" + line + "\033[K") if self.interactive else line, end="" if self.interactive else "\n",
              file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.interactive and not self.quiet and self.count:
            print(file=sys.stderr)
