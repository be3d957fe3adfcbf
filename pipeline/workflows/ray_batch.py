"""``python -m pipeline batch ... --ray [ADDRESS]``: the same batch on a Ray cluster, as a Ray Data pipeline.

    plan (driver) -> decode + mask (CPU tasks) -> generate (actor pool, one GPU each, models loaded once per
    actor) -> composite + write (CPU tasks) -> manifest line (driver, as each result streams back)

Planning, the manifest, resume and --redo are the local batch's own (``workflows.batch``, ``workflows.manifest``,
from the same ``BatchOptions``); only the running differs. Each item's images and their ``.json`` sidecars are written
by a CPU task straight into ``--out``
(atomically, as the local batch writes them), so ``--out`` must be a folder every node reaches at the same
path (docs/SCALE.md). A "writing" line goes into the manifest before the files, under a lock on the folder,
so a run killed in between leaves exactly the files its rerun removes, as the local batch does.

Quality: each image's check runs where it is composited, and its figures, verdict and tries go into the manifest
as the local batch writes them (``batch.outcome``). With ``--qa-retries`` an item's tries run in its actor: whether
to make it again depends on the check of the composited image, so the actor composites and checks each try itself
(the product laid back and one mask-model run, well under a second, against seconds of generation) and hands the
kept try to the writing stage; without it the actor only generates and compositing stays on the CPU tasks.

Failures: a bad input is a ``failed`` line, never a failed job. An actor that dies (a lost node, an out-of-
memory kill) is restarted by Ray and the items it held are retried on the pool: Ray Data gives its actor
pools ``max_restarts=-1`` and ``max_task_retries=-1`` (ray/data/_internal/execution/operators/
actor_pool_map_operator.py); CPU tasks are retried by Ray's task retries (3 by default).
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.contract.errors import BackdropError
from pipeline.contract.request import BgReplaceRequest
from pipeline.workflows.batch import (
    BatchOptions,
    Item,
    _announce,
    _ProgressBar,
    check_retries,
    count_done,
    failure,
    items_to_make,
    new_row,
    outcome,
    plan_items,
)
from pipeline.workflows.manifest import FINISHED, MANIFEST, Manifest, open_manifest, remove_outputs
from pipeline.workflows.outputs import check_out_folder, plan_paths, write_result
from pipeline.workflows.ray_cluster import cluster_gpus, connect, parse_range, reachable
from pipeline.workflows.retries import make_with_retries

LOCK_FILE = ".backdrop-batch.lock"
_shared: dict[str, Any] = {}  # per worker process: the plan, fetched from the object store once


def run_ray_batch(options: BatchOptions, *, address: str = "", workers: str | None = None) -> int:
    """``run_batch`` on a Ray cluster: ``address`` as ``--ray`` takes it ("" starts a local runtime), ``workers``
    the generation pool's ``MIN:MAX`` (default: every GPU in the cluster). The same return codes."""
    started = time.perf_counter()
    if options.backend != "local":
        raise BackdropError("--ray runs the local models on the cluster's GPUs; the hosted API needs no cluster "
                            "(use --jobs for parallel hosted calls)", field="--ray")
    check_retries(options)
    if options.jobs != 1:
        raise BackdropError("sets how many hosted calls run at once; on Ray the generation pool's size is --workers",
                            field="--jobs")
    chosen_pool = parse_range(workers, field_name="--workers") if workers else None  # checked before Ray starts
    reachable(address or None)
    out = options.out
    check_out_folder(out)
    items = plan_items(options)  # every photo found and every value checked before any work starts
    manifest = open_manifest(out)
    todo = items_to_make(items, manifest, out, redo=options.redo)
    _announce(options, items, todo)
    arrivals: list[float] = []  # when each item's row came back
    if todo:
        ray = connect(address or None)
        gpus = max(1, cluster_gpus(ray))
        pool = chosen_pool or (gpus, gpus)  # default: every GPU (one CPU actor without any)
        bar = _ProgressBar(len(todo), len(items) - len(todo), quiet=options.quiet)
        try:
            for row in stream_rows(ray, todo, manifest, options, pool=pool):
                with folder_lock(out):
                    manifest.record(row)
                arrivals.append(time.perf_counter())
                bar.advance(row)
        except KeyboardInterrupt:
            bar.finish()
            Manifest(manifest.path)  # re-read (workers' "writing" lines included) and compacted
            print(f"backdrop: interrupted; {MANIFEST} holds every finished item, rerun the same command to resume",
                  file=sys.stderr)
            return 130
        bar.finish()
    manifest = Manifest(manifest.path)  # one line per item again, the workers' lines included
    done, review = count_done(items, manifest)
    skipped = len(items) - len(todo)
    print(f"backdrop: {done - skipped} made, {skipped} skipped (already made), {len(items) - done} failed, "
          f"{review} to review, {time.perf_counter() - started:.1f} s on Ray{_pace(arrivals, started)}; "
          f"manifest: {manifest.path}", file=sys.stderr)
    return 1 if len(items) > done else 0


def _pace(arrivals: list[float], started: float) -> str:
    """`` (first result after 41.2 s, then 3.1 s per item)``: the start-up (Ray, the actors' model loads, the
    first item) and the pool's pace after it, as the local batch's summary splits its time."""
    if len(arrivals) < 2:
        return ""
    pace = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)
    return f" (first result after {arrivals[0] - started:.1f} s, then {pace:.1f} s per item)"


def stream_rows(ray: Any, todo: list[Item], manifest: Manifest, options: BatchOptions,
                pool: tuple[int, int]) -> Iterator[dict[str, Any]]:
    """Each item's manifest row, in the order items finish."""
    import logging

    from pipeline.backends.local.models import model_spec

    gpus = cluster_gpus(ray)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the batch's own progress line says it, once per item
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    plan = ray.put({"items": todo, "old_outputs": {item.key: _old_outputs(manifest, item) for item in todo},
                    "out": str(options.out),
                    "native_resolution": model_spec(options.chosen_model_set()).native_resolution})
    dataset = ray.data.from_items([{"index": index} for index in range(len(todo))], override_num_blocks=len(todo))
    dataset = dataset.map(prepare_item, fn_kwargs={"plan": plan}, num_cpus=1)
    dataset = dataset.map_batches(
        Generator, batch_size=1, compute=ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1]),
        fn_constructor_kwargs={"model_set": options.chosen_model_set(), "device": options.device,
                               "dtype": options.dtype, "memory_mode": options.memory_mode,
                               "qa_retries": options.qa_retries},
        **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    dataset = dataset.map(compose_and_write, fn_kwargs={"plan": plan}, num_cpus=1)
    for row in dataset.iter_rows():
        yield json.loads(row["row"])


def _old_outputs(manifest: Manifest, item: Item) -> list[str]:
    """--redo: the images a done item had, replaced by the new ones."""
    old = manifest.rows.get(item.key, {})
    return old.get("outputs", []) if old.get("status") in FINISHED else []


# --- the stages; each runs in a Ray worker process --------------------------------------------------------------

def prepare_item(row: dict[str, Any], plan: Any) -> dict[str, Any]:
    """Decode the photo and find the product (CPU). A bad photo becomes its failed row here."""
    from pipeline.stages.prepare import prepare_inputs

    item = _plan(plan)["items"][row["index"]]
    record = new_row(item) | {"_t": time.time()}  # when its work began: the stages run in other processes
    try:
        request = BgReplaceRequest.from_dict(item.fields | {"image": item.path})
        record["request"] = request.settings()
        clock = time.perf_counter()
        prepared = prepare_inputs(request, _plan(plan)["native_resolution"])
        work = {"request": request, "prepared": prepared, "timings": {"prepare": time.perf_counter() - clock}}
    except Exception as error:  # noqa: BLE001 (BackdropError or not: one broken item must not stop a catalogue)
        record |= failure(error)
        work = None
    return {"index": row["index"], "record": pickle.dumps(record), "work": pickle.dumps(work)}


class Generator:
    """One actor of the pool: the models loaded once, the prompts' and references' embeddings reused across
    its items (as one local batch reuses them). With ``qa_retries`` it makes each item's tries (module doc)."""

    def __init__(self, model_set: str, device: str | None, dtype: str | None, memory_mode: str | None,
                 qa_retries: int = 0) -> None:
        from pipeline.backends.local.models import load_models
        from pipeline.stages.reuse import Reuse

        self.models = load_models(model_set, device=device, dtype=dtype, memory_mode=memory_mode)
        self.reuse = Reuse()
        self.qa_retries = qa_retries

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        records, works = [], []
        for record_bytes, work_bytes in zip(batch["record"], batch["work"]):
            record, work = pickle.loads(record_bytes), pickle.loads(work_bytes)
            if work is not None:
                work = self._generate(record, work)
            records.append(pickle.dumps(record))
            works.append(pickle.dumps(work))
        return {"index": list(batch["index"]), "record": records, "work": works}

    def _generate(self, record: dict[str, Any], work: dict[str, Any]) -> dict[str, Any] | None:
        try:
            if self.qa_retries:
                return work | {"tries": make_with_retries(lambda each: self._make(each, work), work["request"],
                                                          self.qa_retries)}
            return work | self._backgrounds(work["request"], work)
        except Exception as error:  # noqa: BLE001
            record |= failure(error)
            return None

    def _backgrounds(self, request: BgReplaceRequest, work: dict[str, Any]) -> dict[str, Any]:
        from pipeline.backends.local.backend import generate_backgrounds, result_info

        timings = dict(work["timings"])
        backgrounds, seeds, detail_info = generate_backgrounds(request, work["prepared"], models=self.models,
                                                               timings=timings, reuse=self.reuse)
        return {"backgrounds": backgrounds, "seeds": seeds, "timings": timings,
                "info": result_info(self.models, request) | detail_info}

    def _make(self, request: BgReplaceRequest, work: dict[str, Any]) -> Any:
        """One try, composited and checked here: whether there is another depends on its check."""
        made = self._backgrounds(request, work)
        return composite(request, work["prepared"], made)


def compose_and_write(row: dict[str, Any], plan: Any) -> dict[str, Any]:
    """Lay each product back over its new backgrounds (CPU) and write the images; return the manifest row."""
    shared = _plan(plan)
    item = shared["items"][row["index"]]
    record, work = pickle.loads(row["record"]), pickle.loads(row["work"])
    if work is not None:
        try:
            tries = work.get("tries")
            if tries is None:  # no retries asked: one try, composited here
                result = composite(work["request"], work["prepared"], work)
                tries = make_with_retries(lambda request: result, work["request"], 0)
            paths = write_item(item, tries.best, Path(shared["out"]), shared["old_outputs"][item.key])
            record |= {"outputs": [str(path) for path in paths]} | outcome(tries)
        except Exception as error:  # noqa: BLE001
            record |= failure(error)
    started = record.pop("_t")
    record |= {"seconds": round(time.time() - started, 3),
               "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
    return {"row": json.dumps(record, ensure_ascii=False)}


def composite(request: BgReplaceRequest, prepared: Any, made: dict[str, Any]) -> Any:
    """The product laid back over ``made``'s backgrounds and each image checked: the finished result."""
    from pipeline.stages.prepare import finish_result

    started = time.perf_counter() - sum(made["timings"].values())
    return finish_result(request, prepared, made["backgrounds"], made["seeds"], timings=made["timings"],
                         started=started, backend="local", info=made["info"])


def write_item(item: Item, result: Any, out: Path, old_outputs: list[str]) -> list[Path]:
    """The local batch's writer for many processes: names picked, recorded as "writing" and written under a
    lock on --out, so two items with one name (front.jpg, front.png) never pick the same file."""
    with folder_lock(out):
        remove_outputs(old_outputs)
        paths = plan_paths(result, out / item.relative.parent, stem=item.relative.stem)
        _append_line(out / MANIFEST, {"input": item.key, "status": "writing", "outputs": [str(p) for p in paths]})
        write_result(result, paths)
    return paths


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """An exclusive lock on --out shared by every process of the run (fcntl: local disks and NFS)."""
    with open(out / LOCK_FILE, "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _plan(plan: Any) -> dict[str, Any]:
    import ray

    key = plan.hex()
    if key not in _shared:
        _shared.clear()
        _shared[key] = ray.get(plan)
    return _shared[key]


def _append_line(path: Path, row: dict[str, Any]) -> None:
    """One manifest line, appended and flushed to disk as ``Manifest.record`` does (the caller holds the lock)."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(row, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
