"""Request overhead: everything a request costs but the denoising loop, with the tiny model set on the CPU.

    python benchmarks/overhead.py [--samples 1 4] [--repeats 3] [--size 1024]

A request goes the way a REST call goes: a JSON body with base64 JPEGs is parsed and validated, the
product is masked (u2netp; the mask cache is cleared first, so every run pays for a new photo's
mask), the pipeline runs (prompt and reference embeddings, VAE encode and decode, the denoising loop),
the product is laid back and every image is encoded to base64 JPEG. The loop is timed on its own (from
the moment diffusers opens its progress bar to the moment it closes it) and subtracted: with SDXL the
loop is the GPU's work, and the rest is what Backdrop adds around it. Prints a table and writes
benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import RESULTS, jpeg_bytes, machine, peak_rss_mib, reset_peak_rss, rss_mib, table, write_report

ROWS = ("parse_and_decode", "prepare", "pipeline_outside_loop", "compose", "encode_output", "overhead",
        "denoising_loop")


def loop_timer(pipe: Any) -> list[float]:
    """Record the seconds spent inside the pipeline's denoising loop, which diffusers wraps in its
    progress bar; returns the list each call appends to."""
    spans: list[float] = []
    original = pipe.progress_bar

    @contextlib.contextmanager
    def timed_bar(*args: Any, **kwargs: Any) -> Iterator[Any]:
        started = time.perf_counter()
        with original(*args, **kwargs) as bar:
            yield bar
        spans.append(time.perf_counter() - started)

    pipe.progress_bar = timed_bar
    return spans


def body(size: int, samples: int) -> dict[str, Any]:
    from render import perfume_bottle, reference_scene

    photo, _ = perfume_bottle(size, size)
    encode = lambda image: base64.b64encode(jpeg_bytes(image)).decode()  # noqa: E731
    return {"image": encode(photo), "ref_image": encode(reference_scene("jungle", 512, 512)),
            "prompt": "perfume bottle on a mossy rock", "samples": samples, "seed": 7, "mask_model": "u2netp",
            "scheduler": "Euler", "num_inference_steps": 20}


def one_request(models: Any, data: dict[str, Any], spans: list[float]) -> dict[str, float]:
    from pipeline import BgReplaceRequest, generate
    from pipeline.contract.images import encode_image
    from pipeline.stages.masking import clear_mask_cache

    clear_mask_cache()
    started = time.perf_counter()
    request = BgReplaceRequest.from_dict(data)
    parsed = time.perf_counter() - started
    spans.clear()
    result = generate(request, models=models)
    encode_start = time.perf_counter()
    encoded = [base64.b64encode(encode_image(image, "jpeg")) for image in result.images]
    assert len(encoded) == data["samples"]
    total = time.perf_counter() - started
    loop = sum(spans)
    return {"parse_and_decode": parsed, "prepare": result.timings["prepare"],
            "pipeline_outside_loop": result.timings["generate"] - loop, "compose": result.timings["compose"],
            "encode_output": time.perf_counter() - encode_start, "denoising_loop": loop,
            "overhead": total - loop, "total": total}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024, help="the product photo's side in pixels")
    parser.add_argument("--json", type=Path, default=RESULTS / "overhead.json")
    args = parser.parse_args(argv)

    from pipeline import load_models

    models = load_models("tiny", device="cpu")
    spans = loop_timer(models.pipe)
    cases = []
    for samples in args.samples:
        data = body(args.size, samples)
        one_request(models, data, spans)  # warm-up: first-call costs belong to no row
        before = rss_mib()
        reset_peak_rss()
        runs = [one_request(models, data, spans) for _ in range(args.repeats)]
        cases.append({"samples": samples, "seconds": {key: statistics.median(run[key] for run in runs)
                                                      for key in runs[0]},
                      "peak_extra_mib": round(peak_rss_mib() - before, 1)})
    report = {"benchmark": "overhead", "model_set": "tiny", "photo": f"{args.size}x{args.size}",
              "generation_size": f"{models.spec.native_resolution}px", "repeats": args.repeats,
              "machine": machine(), "cases": cases}
    headers = ["median seconds"] + [f"{case['samples']} sample(s)" for case in cases]
    rows = [[row] + [case["seconds"][row] for case in cases] for row in ROWS]
    rows.append(["peak memory during requests, MiB above the process's"] + [case["peak_extra_mib"] for case in cases])
    print(table(headers, rows))
    write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
