"""The cost of each grounding layer (shadows, reflection, light match) next to compositing alone, per photo size.

    python benchmarks/layers.py [--sizes 1024x1024 6000x4000] [--repeats 5]

The photo is the example running shoe shot on white with a soft shadow of its own (so ``original`` has a
shadow to keep), with its true alpha as the mask: no mask model runs, only the compose step is timed.
Each row is ``compose_output`` (what finish_result runs per sample) with one setting, over a 1 MP
background as a generator returns it; ``ratio`` is its time over compositing alone (shadow none), the row
a default request pays. ``original`` also costs once per photo, before generation, to find the photo's
shadow: that is its own row. Medians of ``--repeats`` runs after one warm-up. Prints a table and writes
benchmarks/results/layers.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, parse_size, table, timed, write_report

LAYERS: dict[str, dict[str, Any]] = {  # row name -> the request settings it adds
    "compositing alone (shadow none)": {},
    "shadow contact": {"shadow": "contact"},
    "shadow soft": {"shadow": "soft"},
    "shadow hard": {"shadow": "hard"},
    "shadow floating": {"shadow": "floating"},
    "shadow original": {"shadow": "original"},
    "reflection 0.3": {"reflection": 0.3},
    "light_match 1": {"light_match": 1.0},
    "soft + reflection + light_match": {"shadow": "soft", "reflection": 0.3, "light_match": 1.0},
}
PLAIN = "compositing alone (shadow none)"
ORIGINAL_PREPARE = "(once per photo) find the photo's own shadow"


def shot(width: int, height: int) -> tuple[Any, Any]:
    """The example shoe at ``width`` x ``height`` on white with its own soft shadow, and its true alpha.
    Large sizes are rendered at 1.5 MP and enlarged, as benchmarks/preprocess.py does."""
    import cv2
    import numpy as np
    from PIL import Image
    from render import running_shoe, with_soft_shadow

    scale = min(1.0, (1536 * 1024 / (width * height)) ** 0.5)
    photo, alpha = running_shoe(max(64, round(width * scale)), max(64, round(height * scale)))
    photo, _ = with_soft_shadow(photo, alpha)
    if scale == 1.0:
        return photo, alpha
    big = cv2.resize(np.asarray(photo), (width, height), interpolation=cv2.INTER_CUBIC)
    big_alpha = cv2.resize(np.asarray(alpha), (width, height), interpolation=cv2.INTER_CUBIC)
    return Image.fromarray(big), Image.fromarray(big_alpha)


def measure(width: int, height: int, *, repeats: int) -> dict[str, Any]:
    import numpy as np
    from render import reference_scene

    from pipeline import BgReplaceRequest
    from pipeline.stages.compose import resize
    from pipeline.stages.photo_shadow import photo_shading
    from pipeline.stages.prepare import compose_output, prepare_inputs

    photo, alpha = shot(width, height)
    scene = reference_scene("wood", 512, 512)
    # One preparation serves every row: made for ``original``, it also holds the photo's shadow, which
    # only that mode reads.
    prepared = prepare_inputs(BgReplaceRequest(image=photo, ref_image=scene, prompt="shoe on a deck", mask=alpha,
                                               shadow="original"), 1024)
    background = resize(scene, prepared.size)
    seconds: dict[str, float] = {}
    for name, settings in LAYERS.items():
        request = BgReplaceRequest(image=photo, ref_image=scene, prompt="shoe on a deck", mask=alpha, **settings)
        compose_output(request, prepared, background)  # warm-up
        seconds[name], output = timed(lambda request=request: compose_output(request, prepared, background), repeats)
        assert output.size == (width, height)
    pixels, weights = np.asarray(photo), np.asarray(alpha)
    seconds[ORIGINAL_PREPARE] = timed(lambda: photo_shading(pixels, weights), repeats)[0]
    ratios = {name: round(value / seconds[PLAIN], 2) for name, value in seconds.items()}
    return {"size": f"{width}x{height}", "megapixels": round(width * height / 1e6, 1), "seconds": seconds,
            "ratio_to_compositing": ratios}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1024x1024", "6000x4000"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS / "layers.json")
    args = parser.parse_args(argv)

    cases = [measure(*parse_size(size), repeats=args.repeats) for size in args.sizes]
    report = {"benchmark": "layers", "repeats": args.repeats, "machine": machine(), "cases": cases}
    headers = ["compose step (median s, and × compositing alone)"] + [case["size"] for case in cases]
    rows = [[name] + [f"{case['seconds'][name]:.3f} ({case['ratio_to_compositing'][name]:g}×)" for case in cases]
            for name in (*LAYERS, ORIGINAL_PREPARE)]
    print(table(headers, rows))
    write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
