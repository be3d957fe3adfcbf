"""A whole catalogue, resumable, with a manifest of every item (``python -m pipeline batch`` runs it).

The run is described by a ``BatchOptions`` (the CLI builds one from its flags; Python code builds its own) and
goes in steps another runner (a distributed batch) can reuse one by one: ``plan_items`` finds every photo and
checks every value before the first image; ``items_to_make`` compares them with the manifest
(``workflows.manifest``); ``process_item`` makes one item and returns its manifest row; ``Manifest.record``
records that row. Images are written under a temporary name and renamed, so no half image ever carries a final
name.
"""

from __future__ import annotations

import collections
import functools
import glob
import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.backends import Runner
from pipeline.backends import runner as backend_runner
from pipeline.contract.errors import BackdropError
from pipeline.contract.request import FIELDS, IMAGE_FIELDS, BgReplaceRequest
from pipeline.stages.masking import find_product_ahead
from pipeline.stages.reuse import Reuse
from pipeline.workflows.manifest import MANIFEST, Manifest, ResultWriter, open_manifest
from pipeline.workflows.outputs import check_out_folder
from pipeline.workflows.retries import MAX_RETRIES, Tries, make_with_retries

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_JOBS = 8


@dataclass(frozen=True)
class BatchOptions:
    """One catalogue run: where its photos come from, what they are made with, and where the results go.

    Exactly one of ``inputs`` (a folder, or a glob where ``**`` recurses) and ``items`` (a .csv or .jsonl file,
    one row per product) is given. ``request`` holds the request fields every item starts from, over the
    preset's; an items file's rows override both.
    """

    out: Path
    inputs: str | None = None
    items: Path | None = None
    request: Mapping[str, Any] = field(default_factory=dict)
    preset: str | None = None
    jobs: int = 1  # hosted calls at once; local work always runs one image at a time
    redo: bool = False  # make again the items already done with other settings, instead of refusing
    backend: str = "local"
    model_set: str | None = None  # None: the default (BACKDROP_MODEL_SET, else sdxl)
    device: str | None = None
    dtype: str | None = None
    memory_mode: str | None = None
    quiet: bool = False  # no progress on stderr
    qa_retries: int = 0  # remake an item whose quality check says review, with the next seeds, up to this often

    def __post_init__(self) -> None:  # paths given as strings work too
        object.__setattr__(self, "out", Path(self.out))
        if self.items is not None:
            object.__setattr__(self, "items", Path(self.items))

    def chosen_model_set(self) -> str:
        from pipeline.backends.local.models import default_model_set

        return self.model_set or default_model_set()


def find_inputs(pattern: str) -> list[Path]:
    """Image files in a folder (not its subfolders), or matching a glob (``**`` recurses); sorted."""
    folder = Path(pattern).expanduser()
    if not folder.exists() and not any(sign in pattern for sign in "*?["):
        raise BackdropError(f"{pattern!r} does not exist: give a folder of product photos or a quoted glob such as "
                            "'shots/**/*.jpg'", field="inputs")
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


def run_batch(options: BatchOptions, runner: Runner | None = None) -> int:
    """Make every item of the catalogue ``options`` describes. Returns 0 when every item is done, 1 when any
    failed (each failure is in the manifest), 130 on Ctrl-C (every finished item recorded; rerun to resume).
    ``runner`` makes each request (``backends.runner``'s shape); by default one for ``options.backend``,
    made only when there is work, so a rerun with nothing left to do loads no models."""
    started = time.perf_counter()
    if not 1 <= options.jobs <= MAX_JOBS:
        raise BackdropError(f"{options.jobs} is out of range; expected 1 to {MAX_JOBS}", field="--jobs")
    check_retries(options)
    out = options.out
    check_out_folder(out)
    items = plan_items(options)  # every photo found and every value checked before the first image
    manifest = open_manifest(out)
    todo = items_to_make(items, manifest, out, redo=options.redo)
    skipped = len(items) - len(todo)
    _announce(options, items, todo)
    # Loads local models before the bar's clock starts; a rerun with nothing left to do loads nothing.
    if todo and runner is None:
        runner = backend_runner(options.backend, model_set=options.chosen_model_set(), device=options.device,
                                dtype=options.dtype, memory_mode=options.memory_mode,
                                on_progress=_load_printer(options.quiet))
    loaded = time.perf_counter()
    bar = _ProgressBar(len(todo), skipped, quiet=options.quiet)
    reuse = Reuse()  # the references' and the prompts' embeddings serve every item that shares them
    writer = ResultWriter(manifest, out)
    work = lambda item: process_item(item, runner, reuse, writer, options.qa_retries)  # noqa: E731
    jobs = options.jobs if options.backend == "hosted" else 1
    if options.jobs > 1 and options.backend != "hosted" and not options.quiet:
        print("backdrop: --jobs applies to hosted calls; local images run one at a time on the GPU", file=sys.stderr)
    look_ahead = None
    if todo and _generation_leaves_the_cpu_free(options):  # see _run_in_turn
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
    done, review = count_done(items, manifest)
    failed = len(items) - done
    finished = time.perf_counter()
    made = done - skipped
    per_image = ""
    if made:
        per_image = f" (start-up {loaded - started:.1f} s, then {(finished - loaded) / made:.1f} s per image)"
    print(f"backdrop: {made} made, {skipped} skipped (already made), {failed} failed, {review} to review, "
          f"{finished - started:.1f} s{per_image}; manifest: {manifest.path}", file=sys.stderr)
    return 1 if failed else 0


def check_retries(options: BatchOptions) -> None:
    if not 0 <= options.qa_retries <= MAX_RETRIES:
        raise BackdropError(f"{options.qa_retries} is out of range; expected 0 to {MAX_RETRIES}", field="--qa-retries")


def count_done(items: list[Item], manifest: Manifest) -> tuple[int, int]:
    """How many of ``items`` the manifest has made, and how many of those ended ``review``."""
    done = [item for item in items if manifest.is_done(item.key)]
    return len(done), sum(1 for item in done if manifest.rows[item.key]["status"] == "review")


def plan_items(options: BatchOptions) -> list[Item]:
    """The photos to make, from a folder/glob or an --items file, each with its checked request fields."""
    if bool(options.inputs) == bool(options.items):
        raise BackdropError("give a folder or glob of product photos, or --items FILE (not both)", field="inputs")
    base = _base_fields(options)
    decoded: dict[Any, Any] = {}  # each reference and mask file decoded once, shared by every item using it
    if options.items:
        return _items_from_file(options, base, decoded)
    out = options.out
    root = input_root(options.inputs)
    out_folder = Path(os.path.abspath(out))
    if out_folder == root:
        raise BackdropError(f"{out} is the input folder itself: its results would be read as photos on the next run; "
                            "give a folder beside or inside it", field="--out")
    paths = find_inputs(options.inputs)  # no photos at all is the first thing to say
    fields = _checked_fields(base, decoded)
    results_inside_inputs = out_folder.is_relative_to(root)
    items = []
    for path in paths:
        absolute = Path(os.path.abspath(path))
        if results_inside_inputs and absolute.is_relative_to(out_folder):
            continue  # an earlier run's result inside the input folder is not a product photo
        relative = _below(path, root)
        items.append(_item(path, relative, _key(path), fields, base, options, str(relative)))
    if not items:
        raise BackdropError(f"no product photos in {options.inputs!r} outside --out", field="inputs")
    return items


def _items_from_file(options: BatchOptions, base: dict[str, Any], decoded: dict[Any, Any]) -> list[Item]:
    from pipeline.workflows.items import read_items
    from pipeline.workflows.presets import get_preset

    source = Path(options.items)
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
        items.append(_item(path, relative, key, checked, fields, options, f"row {row.number} {relative}"))
    return items


def _item(path: Path, relative: Path, key: str, checked: dict[str, Any], raw: dict[str, Any],
          options: BatchOptions, label: str) -> Item:
    settings = {name: checked.get(name, FIELDS[name].default) for name in FIELDS if name not in IMAGE_FIELDS}
    made_with = {"settings": settings, "ref_image": _fingerprint(raw.get("ref_image")),
                 "mask": _fingerprint(raw.get("mask")), "backend": options.backend,
                 "model_set": options.chosen_model_set() if options.backend == "local" else None}
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


def _announce(options: BatchOptions, items: list[Item], todo: list[Item]) -> None:
    """Say what is about to happen before the first (slow) step, instead of nothing until an image ends."""
    if options.quiet:
        return
    source = options.items or options.inputs
    where = "the hosted API" if options.backend == "hosted" else f"the {options.chosen_model_set()} models"
    print(f"backdrop: {len(items)} item(s) from {source}, {len(items) - len(todo)} already made in {options.out}; "
          + (f"loading {where}..." if todo else "nothing left to do"), file=sys.stderr, flush=True)


def _load_printer(quiet: bool) -> Callable[[Any], None]:
    def say(progress: Any) -> None:
        if not quiet and progress.stage == "load":
            print(f"backdrop: {progress.message}", file=sys.stderr, flush=True)

    return say


def _generation_leaves_the_cpu_free(options: BatchOptions) -> bool:
    """Whether masking the next photo alongside generation pays: yes while a GPU or the hosted API does the
    generating; no when generation itself runs on the CPU, where the two would only share its cores (a
    12-photo batch of the tiny models on 2 cores ran 5% slower with it)."""
    if options.backend == "hosted":
        return True
    from pipeline.backends.local.models import resolve_runtime

    return resolve_runtime(options.device, options.dtype, options.memory_mode).device != "cpu"


def _base_fields(options: BatchOptions) -> dict[str, Any]:
    """The preset's settings and reference, then the flags: what every item starts from."""
    fields: dict[str, Any] = {}
    if options.preset:
        from pipeline.workflows.presets import get_preset

        preset = get_preset(options.preset)
        fields |= preset.settings
        if preset.reference:
            fields["ref_image"] = preset.reference
    return {**fields, **options.request}


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


def process_item(item: Item, runner: Runner, reuse: Reuse, writer: ResultWriter, retries: int = 0) -> dict[str, Any]:
    """Make one item and write its images; return its manifest row, "done", "review" or "failed" (never raises
    for the item's own problems: one broken item must not stop a catalogue). With ``retries``, an item whose
    quality check says review is made again with the next seeds (workflows.retries); its best try is written."""
    started = time.perf_counter()
    row = new_row(item)
    try:
        request = BgReplaceRequest.from_dict(item.fields | {"image": item.path})
        row["request"] = request.settings()
        tries = make_with_retries(lambda each: runner(each, reuse=reuse), request, retries)
        row["outputs"] = [str(p) for p in writer.save(item.key, item.relative, tries.best)]
        row |= outcome(tries)
    except Exception as error:  # BackdropError or not: one broken item must not stop a catalogue
        row |= failure(error)
    finally:
        reuse.prepared.clear()  # each photo's mask is its own; keep only what items share
    row |= {"seconds": round(time.perf_counter() - started, 3),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
    return row


def new_row(item: Item) -> dict[str, Any]:
    """An item's manifest row before its outcome (the local and the Ray batch start from the same)."""
    return {"input": item.key, "item": item.label, "outputs": [], "request": None, "seeds": [], "error": None,
            "made_with": item.made_with}


def failure(error: Exception) -> dict[str, str]:
    """A failed item's status and error, in the same words for the local and the Ray batch."""
    message = str(error) if isinstance(error, BackdropError) else f"internal error: {type(error).__name__}: {error}"
    return {"status": "failed", "error": message}


def outcome(tries: Tries) -> dict[str, Any]:
    """What a made item's manifest row records of its kept try (the local and the Ray batch write the same)."""
    result = tries.best
    row = {"status": tries.status, "seeds": list(result.seeds), "timings": result.timings,
           "quality": result.info.get("quality", []), "tries": tries.record}
    if "product_change" in result.info:  # light match changed the product's own pixels: by this much
        row["product_change"] = result.info["product_change"]
    # Framing: where the product landed, so a catalogue's boxes can be checked from the manifest alone.
    return row | {key: result.info[key] for key in ("product_box", "scale", "enlarged") if key in result.info}


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
        self.total, self.count, self.failed, self.review, self.quiet = total, 0, 0, 0, quiet
        self.started = time.monotonic()
        self.interactive = sys.stderr.isatty()
        if skipped and not quiet:
            print(f"backdrop: skipping {skipped} item(s) already done", file=sys.stderr)

    def advance(self, row: dict[str, Any]) -> None:
        self.count += 1
        self.failed += row["status"] == "failed"
        self.review += row["status"] == "review"
        if self.quiet:
            return
        per_image = (time.monotonic() - self.started) / self.count
        eta = per_image * (self.total - self.count)
        line = (f"[{self.count}/{self.total}] {100 * self.count // max(1, self.total)}% · {per_image:.1f} s/image · "
                f"ETA {int(eta // 60)}m{int(eta % 60):02d}s · {self.failed} failed · "
                + (f"{self.review} to review · " if self.review else "") + row["item"])
        if row["status"] == "failed":
            line += f": {row['error']}"
        print(("\r" + line + "\033[K") if self.interactive else line, end="" if self.interactive else "\n",
              file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.interactive and not self.quiet and self.count:
            print(file=sys.stderr)
