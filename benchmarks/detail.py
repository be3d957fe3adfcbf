"""What the detail pass costs, as a ratio to the first generation, at outputs of 1, 4 and 16 megapixels.

    python benchmarks/detail.py [--model-set tiny] [--detail 0.5] [--repeats 1] [--json out.json]

With the tiny set (native 128 px, tiles of 128) the outputs are scaled down with the model: 128, 256 and
512 px squares stand for SDXL's 1024, 2048 and 4096 (1, 4 and 16 MP) and get the same tile grids (1, 9 and
25 tiles), so the ratio is the tile count times the share of steps a tile runs, plus the per-tile set-up
(crops, canny, the VAE's encode and decode). The figures are CPU seconds of random tiny models: the ratio is
what carries over, not the seconds. benchmarks/gpu.py measures the same rows with SDXL-sized models on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, table, write_report

FACTORS = (1, 2, 4)  # output side over the model's native side: 1, 4 and 16 MP for SDXL


def detail_rows(models: Any, *, native: int, detail: float = 0.5, steps: int = 20, repeats: int = 1,
                factors: tuple[int, ...] = FACTORS, say: Any = print) -> list[dict[str, Any]]:
    """One row per output size: tiles, the first generation's and the detail pass's seconds (median of
    ``repeats``) and their ratio. The product's own mask is given, so no mask model runs in what is timed."""
    from render import perfume_bottle, reference_scene

    from pipeline import BgReplaceRequest, generate

    reference = reference_scene("jungle", 256, 256)
    rows = []
    for factor in factors:
        side = native * factor
        photo, alpha = perfume_bottle(side, side)
        request = BgReplaceRequest(image=photo, mask=alpha, ref_image=reference, prompt="perfume bottle on moss",
                                   scheduler="Euler", num_inference_steps=steps, seed=1, detail=detail,
                                   resolution=native)
        runs = [generate(request, models=models) for _ in range(repeats)]
        first = statistics.median(run.timings["generate"] for run in runs)
        refine = statistics.median(run.timings["detail"] for run in runs)
        rows.append({"output_mp_sdxl": factor * factor, "output_side": side, "tiles": runs[0].info["detail_tiles"][0],
                     "detail": detail, "tile_strength": runs[0].info["detail_strength"], "steps": steps,
                     "generate_s": round(first, 3), "detail_s": round(refine, 3), "ratio": round(refine / first, 2)})
        say(f"  {side}x{side} ({factor * factor} MP at SDXL scale): {rows[-1]['tiles']} tiles, first generation "
            f"{first:.2f} s, detail {refine:.2f} s, ratio {refine / first:.2f}")
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-set", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detail", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--factors", type=int, nargs="+", default=list(FACTORS))
    parser.add_argument("--json", type=Path, default=RESULTS / "detail.json")
    args = parser.parse_args(argv)

    from pipeline import generate, load_models

    models = load_models(args.model_set, device=args.device)
    native = models.spec.native_resolution
    from render import perfume_bottle, reference_scene

    from pipeline import BgReplaceRequest

    photo, alpha = perfume_bottle(native, native)  # warm-up: first-call costs belong to no row
    generate(BgReplaceRequest(image=photo, mask=alpha, ref_image=reference_scene("jungle", 256, 256), prompt="x",
                              scheduler="Euler", num_inference_steps=20, detail=args.detail), models=models)
    rows = detail_rows(models, native=native, detail=args.detail, repeats=args.repeats, factors=tuple(args.factors))
    report = {"benchmark": "detail", "model_set": args.model_set, "device": args.device, "machine": machine(),
              "rows": rows}
    print()
    print(table(["output (SDXL scale)", "side here", "tiles", "first generation s", "detail s", "detail / first"],
                [[f"{r['output_mp_sdxl']} MP", r["output_side"], r["tiles"], r["generate_s"], r["detail_s"],
                  f"{r['ratio']:.2f}x"] for r in rows]))
    write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
