"""A Ray batch with one generation worker against two, side by side on one local Ray runtime.

    python benchmarks/ray_scaling.py [--photos 8] [--cpus 2] [--model-set tiny] [--json out.json]

Runs ``python -m pipeline batch --ray`` (in this process, on a local runtime of ``--cpus`` CPUs) over the
same photos twice per pool size, into fresh folders: ``--workers 1`` and ``--workers 2``. Reports each
run's wall time and the ratio (one worker's time over two's): the speed-up a second actor brings when the
machine has the cores for it. Ray's start-up is paid once, before either is timed; each timed run still
starts its own actor pool and loads its models in it, as a real run does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import RESULTS, ROOT, machine, table, write_report

PRODUCTS = ("product-perfume.jpg", "product-shoe.jpg", "product-ring.jpg", "product-chair.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--model-set", default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS / "ray_scaling.json")
    args = parser.parse_args()

    # Ray runs its workers at nice 15; on a shared machine that measures the neighbours, not the pipeline.
    os.environ.setdefault("RAY_worker_niceness", "0")
    from pipeline.interfaces.cli import main as backdrop
    from pipeline.workflows.ray_cluster import connect

    ray = connect(None, num_cpus=args.cpus, num_gpus=0)
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    photos = work / "photos"
    photos.mkdir()
    for index in range(args.photos):
        shutil.copy(ROOT / "assets" / PRODUCTS[index % len(PRODUCTS)], photos / f"{index:03d}.jpg")

    def run(workers: int, repeat: int) -> float:
        out = work / f"out-{workers}-{repeat}"
        command = ["batch", str(photos), "--ref", str(ROOT / "assets" / "scene-wood.jpg"), "--prompt", "on a deck",
                   "--model-set", args.model_set, "--scheduler", "Euler", "--num-inference-steps", str(args.steps),
                   "--resolution", str(args.resolution), "--mask-model", "u2netp", "--seed", "1", "--out", str(out),
                   "--quiet", "--ray", "--workers", str(workers)]
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()) as said:
            code = backdrop(command)
        seconds = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"the batch failed ({code}): {said.getvalue()}")
        return seconds

    try:
        times = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2):
                times[workers].append(run(workers, repeat))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    best = {workers: min(values) for workers, values in times.items()}
    ratio = best[1] / best[2]
    print(table(["workers", "photos", "wall s (best)", "s per photo"],
                [[workers, args.photos, best[workers], best[workers] / args.photos] for workers in (1, 2)]))
    print(f"\none worker's time / two workers' time: {ratio:.2f}x")
    write_report(args.json, {"benchmark": "ray_scaling", "machine": machine(), "settings": vars(args) | {"json": None},
                             "seconds": times, "best": best, "ratio_1_over_2": round(ratio, 3)})


if __name__ == "__main__":
    main()
