"""``python -m pipeline batch``: the catalogue workflow (``workflows.batch``) run from flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.contract.errors import BackdropError
from pipeline.interfaces.cli.common import OneLineParser, add_request_flags, request_values
from pipeline.interfaces.cli.serve import add_ray_flag
from pipeline.workflows.batch import MAX_JOBS, BatchOptions, run_batch
from pipeline.workflows.retries import MAX_RETRIES


def build_parser() -> argparse.ArgumentParser:
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
    add_ray_flag(parser)
    parser.add_argument("--workers", metavar="MIN:MAX",
                        help="With --ray: generation actors, one GPU each (CPUs where the cluster has none). "
                             "Default: every GPU in the cluster.")
    parser.add_argument("--qa-retries", type=int, default=0, metavar="N",
                        help=f"Make an item whose quality check says review again with the next seeds, up to N "
                             f"times (0..{MAX_RETRIES}); the best try is kept, and an item still over a --qa-max-* "
                             "threshold ends 'review'. Default: 0.")
    add_request_flags(parser, ref_required=False)
    return parser


def options_from(args: argparse.Namespace) -> BatchOptions:
    """The run the flags describe."""
    return BatchOptions(out=args.out, inputs=args.inputs, items=args.items, request=request_values(args),
                        preset=args.preset, jobs=args.jobs, redo=args.redo, backend=args.backend,
                        model_set=args.model_set, device=args.device, dtype=args.dtype,
                        memory_mode=args.memory_mode, quiet=args.quiet, qa_retries=args.qa_retries)


def run(args: argparse.Namespace) -> int:
    if args.ray is not None:  # the same catalogue as a Ray Data pipeline (docs/SCALE.md)
        from pipeline.workflows.ray_batch import run_ray_batch

        return run_ray_batch(options_from(args), address=args.ray, workers=args.workers)
    if args.workers:
        raise BackdropError("sizes a Ray batch's actor pool: add --ray", field="--workers")
    return run_batch(options_from(args))
