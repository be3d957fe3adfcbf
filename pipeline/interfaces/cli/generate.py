"""``python -m pipeline``: one product photo in, background-replaced images and their settings out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.backends import runner
from pipeline.contract.request import BgReplaceRequest
from pipeline.interfaces.cli.common import (
    OneLineParser,
    add_request_flags,
    finish_progress,
    progress_printer,
    request_values,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m pipeline",
        description="Replace the background of a product photo, keeping the product's own pixels. "
                    "For a whole folder: python -m pipeline batch --help",
    )
    parser.add_argument("--image", required=True, help="Product photo (JPEG, PNG, WebP, ...).")
    add_request_flags(parser, ref_required=True)
    return parser


def run(args: argparse.Namespace) -> int:
    from pipeline.workflows.outputs import check_out_folder, save_result

    check_out_folder(args.out)
    request = BgReplaceRequest.from_dict(request_values(args) | {"image": Path(args.image)})
    say = progress_printer(quiet=args.quiet)
    run_request = runner(args.backend, model_set=args.model_set, device=args.device, dtype=args.dtype,
                         memory_mode=args.memory_mode, on_progress=say)
    result = run_request(request)
    paths = save_result(result, args.out, stem=Path(args.image).stem)
    finish_progress(args.quiet)
    for path in paths:
        print(path)
    if not args.quiet:
        seeds = ", ".join(map(str, result.seeds))
        credits = result.info.get("remaining_credits")
        extra = f", {credits:g} credits left" if credits is not None else ""
        if result.info.get("product_change"):  # light match changed the product's own pixels: say so
            changes = ", ".join(f"{change:g}" for change in result.info["product_change"])
            extra += f", product colours adjusted by light match (mean change {changes} levels)"
        print(f"backdrop: {len(paths)} image(s), seed(s) {seeds}, {result.timings['total']:.1f} s{extra}",
              file=sys.stderr)
    return 0
