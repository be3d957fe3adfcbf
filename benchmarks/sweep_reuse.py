"""What reusing the mask, canny map and embeddings saves in a 3x3 sweep, measured side by side in one run.

    python benchmarks/sweep_reuse.py [--model-set tiny] [--repeats 2] [--json out.json]

Runs the same 9 cells three ways: as a sweep (shared ``Reuse``); as 9 independent requests, each computing
its own mask, canny map, prompt and reference embeddings (the mask cache cleared before each); and as 9
requests one after another the way a photographer reruns the studio, where only the mask cache carries
over. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import RESULTS, machine, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-set", default="tiny")
    parser.add_argument("--mask-model", default="u2netp")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS / "sweep_reuse.json")
    args = parser.parse_args()

    from render import perfume_bottle, reference_scene

    from pipeline import BgReplaceRequest, generate, load_models
    from pipeline.stages.masking import clear_mask_cache
    from pipeline.stages.reuse import Reuse
    from pipeline.workflows.sweep import run_grid

    models = load_models(args.model_set)
    photo, _ = perfume_bottle(1024, 1024)
    base = BgReplaceRequest(image=photo, ref_image=reference_scene("jungle", 512, 512), prompt="perfume bottle on moss",
                            mask_model=args.mask_model, scheduler="Euler", num_inference_steps=20, seed=1)
    run = lambda request, **hooks: generate(request, models=models, **hooks)  # noqa: E731
    x_values, y_values = [0.3, 0.6, 0.9], [4.0, 7.0, 10.0]
    run(base)  # warm-up: first-call costs (session creation, allocator) belong to neither side

    def one_by_one(forget_masks: bool) -> float:
        clear_mask_cache()
        started = time.perf_counter()
        for guidance in y_values:
            for weight in x_values:
                if forget_masks:
                    clear_mask_cache()
                run(base.replace(cn_weight=weight, guidance_scale=guidance), reuse=Reuse())
        return time.perf_counter() - started

    swept, independent, remembered = [], [], []
    for _ in range(args.repeats):
        clear_mask_cache()
        started = time.perf_counter()
        run_grid(base, run, "cn_weight", x_values, "guidance_scale", y_values)
        swept.append(time.perf_counter() - started)
        independent.append(one_by_one(forget_masks=True))
        remembered.append(one_by_one(forget_masks=False))

    best_sweep, best_independent, best_remembered = min(swept), min(independent), min(remembered)
    report = {
        "model_set": args.model_set, "mask_model": args.mask_model, "cells": 9, "image": "1024x1024",
        "device": models.runtime.device, "sweep_seconds": round(best_sweep, 3),
        "independent_seconds": round(best_independent, 3), "mask_cache_seconds": round(best_remembered, 3),
        "speedup": round(best_independent / best_sweep, 3),
        "saved_percent": round(100 * (1 - best_sweep / best_independent), 1), "machine": machine(),
    }
    print(f"| 3x3 sweep ({args.model_set}, {args.mask_model}, {report['device']}) | seconds |\n|---|---|")
    print(f"| 9 independent requests | {best_independent:.2f} |")
    print(f"| 9 requests in a row on one photo (mask cache) | {best_remembered:.2f} |")
    print(f"| one sweep, shared work | {best_sweep:.2f} |")
    print(f"| speed-up | {report['speedup']:.2f}x ({report['saved_percent']}% less time) |")
    write_report(args.json, report)


if __name__ == "__main__":
    main()
