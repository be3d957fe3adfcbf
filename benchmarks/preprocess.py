"""Preprocessing cost on the CPU, per photo size: decode + EXIF, mask, canny, soft edge, compositing.

    python benchmarks/preprocess.py [--sizes 1024x1024 6000x4000] [--repeats 5] [--mask-model u2netp]
                                    [--canvas 2000x2000]

The photo is the example running shoe, stored as a camera stores a portrait-held shot (JPEG, EXIF
orientation 6), so decoding includes turning it upright. Each stage goes through the library's own
functions (``load_image``, ``prepare_inputs``, ``compose_output``); the figures are medians of
``--repeats`` runs after one warm-up run, which also pays the one-off cost of opening the mask model
(reported on its own). Every timed run is a new photo to the mask cache (cleared first); the row after
the total is the same photo again, as when a photographer reruns with a new prompt or seed and the mask
is remembered. A row under the mask's gives the mask network alone (rembg on the photo already shrunk
to the model's input, the part no code of ours can speed up). The fastest and slowest new-photo totals
and the share of CPU time the hypervisor took meanwhile (on a shared virtual machine, the usual reason
one run is slower than another) come last. Each photo is measured again placed on ``--canvas`` (README,
"Framing"; ``none`` skips it), and the framed total is reported as a ratio to the unframed one. Prints a
table and writes benchmarks/results/preprocess.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    cpu_ticks,
    jpeg_bytes,
    machine,
    parse_size,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    stolen_percent,
    table,
    timed,
    write_report,
)

STAGES = ("decode_exif", "mask", "refine_and_resize", "canny", "soft_edge", "composite")


def product_photo(width: int, height: int) -> Any:
    """The example shoe at ``width`` x ``height``. Large sizes are rendered at 1.5 MP, enlarged and given
    sensor noise, so the JPEG carries a real photo's detail (and decodes at a real photo's cost)."""
    import cv2
    import numpy as np
    from PIL import Image
    from render import running_shoe

    scale = min(1.0, (1536 * 1024 / (width * height)) ** 0.5)
    photo, _ = running_shoe(max(64, round(width * scale)), max(64, round(height * scale)))
    if scale == 1.0:
        return photo
    pixels = cv2.resize(np.asarray(photo), (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    noise = np.random.default_rng(0).normal(0, 2.0, pixels.shape).astype(np.int16)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), mode="RGB")


def measure(width: int, height: int, *, repeats: int, mask_model: str, canvas: str | None = None) -> dict[str, Any]:
    from PIL import Image
    from render import reference_scene

    from pipeline import BgReplaceRequest
    from pipeline.contract.images import load_image
    from pipeline.stages.compose import resize
    from pipeline.stages.prepare import compose_output, prepare_inputs

    # Stored sideways with orientation 6 ("turn 90 degrees clockwise to view"): upright it is width x height.
    data = jpeg_bytes(product_photo(width, height).transpose(Image.Transpose.ROTATE_90), orientation=6)
    scene = reference_scene("marble", 512, 512)

    def once(new_photo: bool = True) -> dict[str, float]:
        if new_photo:  # the first request for a photo; a rerun of the same photo finds its mask remembered
            clear_mask_cache()
        started = time.perf_counter()
        photo = load_image(data)
        decoded = time.perf_counter() - started
        assert photo.size == (width, height), photo.size
        framing = {"canvas": canvas, "padding": 0.075, "placement": "bottom"} if canvas else {}
        request = BgReplaceRequest(image=photo, ref_image=scene, prompt="shoe on marble", mask_model=mask_model,
                                   **framing)
        prepared = prepare_inputs(request, 1024)
        background = resize(scene, prepared.size)
        compose_seconds, output = timed(lambda: compose_output(request, prepared, background), 1)
        assert output.size == (prepared.placement.canvas if canvas else (width, height))
        seconds = {"decode_exif": decoded, **prepared.seconds, "composite": compose_seconds}
        seconds["total"] = time.perf_counter() - started
        return seconds

    from pipeline.stages.masking import clear_mask_cache, mask_session

    opened = time.perf_counter()
    mask_session(mask_model)
    open_seconds = time.perf_counter() - opened
    once()  # warm-up: first-call allocations and caches belong to no row
    baseline = rss_mib()
    reset_peak_rss()
    ticks = cpu_ticks()
    runs = [once() for _ in range(repeats)]
    stolen = stolen_percent(ticks, cpu_ticks())
    medians = {stage: statistics.median(run[stage] for run in runs) for stage in (*STAGES, "total")}
    medians["total, same photo again"] = statistics.median(once(new_photo=False)["total"] for _ in range(repeats))
    totals = [run["total"] for run in runs]
    network_seconds = mask_network_seconds(load_image(data), mask_model, repeats)
    return {"size": f"{width}x{height}" + (f" on {canvas}" if canvas else ""), "jpeg_mib": round(len(data) / 2**20, 2),
            "seconds": medians,
            "mask_network_seconds": network_seconds,
            "total_fastest_seconds": min(totals), "total_slowest_seconds": max(totals),
            "cpu_stolen_percent": stolen, "mask_model_open_seconds": open_seconds, "rss_before_mib": baseline,
            "peak_rss_mib": peak_rss_mib(), "peak_extra_mib": round(peak_rss_mib() - baseline, 1)}


def mask_network_seconds(photo: Any, mask_model: str, repeats: int) -> float:
    """The median of ``repeats`` runs of the mask model alone (rembg, on the photo already shrunk to the
    model's input): the part of the mask step no code of ours can speed up."""
    import rembg

    from pipeline.stages.masking import mask_session, model_input

    small, session = model_input(photo, mask_model).convert("RGB"), mask_session(mask_model)
    rembg.remove(small, session=session, only_mask=True)
    return timed(lambda: rembg.remove(small, session=session, only_mask=True), repeats)[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1024x1024", "6000x4000"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mask-model", default="u2netp")
    parser.add_argument("--canvas", default="2000x2000", help="Also place each photo on this canvas ('none': don't).")
    parser.add_argument("--json", type=Path, default=RESULTS / "preprocess.json")
    args = parser.parse_args(argv)

    cases = [measure(*parse_size(size), repeats=args.repeats, mask_model=args.mask_model) for size in args.sizes]
    canvas = None if args.canvas.lower() == "none" else args.canvas
    framed = [measure(*parse_size(size), repeats=args.repeats, mask_model=args.mask_model, canvas=canvas)
              for size in args.sizes] if canvas else []
    for plain, placed in zip(cases, framed):
        placed["ratio_to_unframed"] = round(placed["seconds"]["total"] / plain["seconds"]["total"], 3)
    report = {"benchmark": "preprocess", "mask_model": args.mask_model, "repeats": args.repeats,
              "machine": machine(), "cases": cases, "framed": framed}
    cases = cases + framed  # the table shows both, side by side
    headers = ["stage (median s)"] + [case["size"] for case in cases]
    stages = (*STAGES, "total", "total, same photo again")
    rows = [[stage] + [case["seconds"][stage] for case in cases] for stage in stages]
    rows.insert(STAGES.index("mask") + 1, ["(of the mask) the mask network alone"]
                + [case["mask_network_seconds"] for case in cases])
    rows.append(["total, a new photo: fastest - slowest run"]
                + [f"{case['total_fastest_seconds']:.3f} - {case['total_slowest_seconds']:.3f}" for case in cases])
    rows.append(["(shared VM) CPU time the hypervisor took during those runs, %"]
                + ["n/a" if case["cpu_stolen_percent"] is None else f"{case['cpu_stolen_percent']:.1f}"
                   for case in cases])
    rows.append(["total, framed / unframed"] + ["" for _ in cases[:len(cases) - len(framed)]]
                + [f"{case['ratio_to_unframed']:.2f}" for case in framed])
    rows.append(["(once per process) open mask model"] + [case["mask_model_open_seconds"] for case in cases])
    rows.append(["peak memory while preprocessing, MiB above the process's"]
                + [case["peak_extra_mib"] for case in cases])
    print(table(headers, rows))
    write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
