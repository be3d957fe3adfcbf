"""``python -m pipeline``: one product photo in, background-replaced images and their settings out."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pipeline.contract.errors import BackdropError
from pipeline.contract.choices import DTYPES, MEMORY_MODES, MODEL_SETS
from pipeline.contract.request import FIELDS, IMAGE_FIELDS, BgReplaceRequest, check_environment
from pipeline.contract.result import Progress

# Image fields are file paths on the command line; "base64" only shapes hosted/REST replies.
_CLI_SKIPS = {*IMAGE_FIELDS, "base64"}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit 2, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m pipeline",
        description="Replace the background of a product photo, keeping the product's own pixels. "
                    "For a whole folder: python -m pipeline batch --help",
    )
    parser.add_argument("--image", required=True, help="Product photo (JPEG, PNG, WebP, ...).")
    add_request_flags(parser, ref_required=True)
    return parser


def add_request_flags(parser: argparse.ArgumentParser, *, ref_required: bool) -> None:
    """The flags a single run and a batch share: every request field, the backend and the output folder."""
    parser.add_argument("--ref", "--ref-image", dest="ref_image", required=ref_required,
                        help="Reference picture of the wanted setting.")
    parser.add_argument("--mask", help="Optional product mask (white = product); overrides --mask-model.")
    for name, spec in FIELDS.items():
        if name in _CLI_SKIPS:
            continue
        flags = [f"--{name.replace('_', '-')}"] + (["--format"] if name == "output_format" else [])
        default = "" if spec.default is None else f" Default: {spec.current_default()}."
        if spec.env:
            default += f" ({spec.env} sets the default.)"
        parser.add_argument(*flags, dest=name, required=spec.required and ref_required, metavar=_metavar(spec.kind),
                            help=f"{spec.help} Allowed: {spec.allowed()}.{default}")
    parser.add_argument("--backend", choices=("local", "hosted"), default="local",
                        help="local (this machine's GPU or CPU) or hosted (the bg-replace API; key from "
                             "SEGMIND_API_KEY, address from SEGMIND_API_URL). Default: local.")
    parser.add_argument("--model-set", choices=MODEL_SETS, default=os.environ.get("BACKDROP_MODEL_SET") or "sdxl",
                        help="sdxl (real models from the hub) or tiny (random tiny models for tests). "
                             "Default: BACKDROP_MODEL_SET or sdxl.")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu. Default: the best available.")
    parser.add_argument("--dtype", choices=DTYPES, help="Default: float16 on a GPU, float32 on CPU.")
    parser.add_argument("--memory-mode", choices=MEMORY_MODES,
                        help="none (fastest), model (CPU offload per model) or sequential (least VRAM).")
    parser.add_argument("--out", required=True, type=Path, help="Folder for the images and their .json sidecars.")
    parser.add_argument("--quiet", action="store_true", help="No progress on stderr.")


def request_values(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields given on the command line (unset flags left out, so defaults and presets apply)."""
    values = {name: getattr(args, name) for name in FIELDS
              if name not in _CLI_SKIPS and getattr(args, name, None) is not None}
    if args.ref_image:
        values["ref_image"] = Path(args.ref_image)
    if args.mask:
        values["mask"] = Path(args.mask)
    return values


def make_runner(args: argparse.Namespace, say: Any) -> Any:
    """``run(request, **hooks) -> result`` for the chosen backend; local models are loaded once, up front."""
    from pipeline.backends import generate

    if args.backend == "hosted":
        return lambda request, **hooks: generate(request, backend="hosted", on_progress=say, **hooks)
    from pipeline.backends.local.models import load_models

    models = load_models(args.model_set, device=args.device, dtype=args.dtype, memory_mode=args.memory_mode,
                         on_progress=lambda message: say(Progress("load", 0.0, message)))
    return lambda request, **hooks: generate(request, models=models, on_progress=say, **hooks)


def _metavar(kind: str) -> str:
    return {"int": "N", "float": "X", "choice": "NAME", "str": "TEXT", "canvas": "SIZE"}.get(kind, "VALUE")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_environment()  # before the flags' help, which shows the defaults the environment sets
    except BackdropError as error:
        print(f"backdrop: error: {error}", file=sys.stderr)
        return error.exit_code
    if argv[:1] == ["batch"]:
        from pipeline.workflows.batch import build_batch_parser, run_batch

        parser, command, argv = build_batch_parser(), run_batch, argv[1:]
    else:
        parser, command = build_parser(), _run
    args = parser.parse_args(argv)
    try:
        return command(args)
    except BackdropError as error:
        print(f"backdrop: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("backdrop: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not a user mistake: one line unless asked for the trace
        if os.environ.get("BACKDROP_DEBUG"):
            raise
        print(f"backdrop: internal error: {type(error).__name__}: {error} (BACKDROP_DEBUG=1 shows the trace)",
              file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from pipeline.workflows.outputs import check_out_folder, save_result

    check_out_folder(args.out)
    request = BgReplaceRequest.from_dict(request_values(args) | {"image": Path(args.image)})
    say = progress_printer(quiet=args.quiet)
    result = make_runner(args, say)(request)
    paths = save_result(result, args.out, stem=Path(args.image).stem)
    _finish_progress(args.quiet)
    for path in paths:
        print(path)
    if not args.quiet:
        seeds = ", ".join(map(str, result.seeds))
        credits = result.info.get("remaining_credits")
        extra = f", {credits:g} credits left" if credits is not None else ""
        print(f"backdrop: {len(paths)} image(s), seed(s) {seeds}, {result.timings['total']:.1f} s{extra}",
              file=sys.stderr)
    return 0


def progress_printer(*, quiet: bool):
    last_stage = {"stage": None, "time": 0.0}
    interactive = sys.stderr.isatty()

    def say(progress: Progress) -> None:
        if quiet:
            return
        if progress.stage == "denoise" and interactive:
            print(f"\r[{progress.stage}] {progress.message} ", end="", file=sys.stderr, flush=True)
            return
        now = time.monotonic()
        if progress.stage != "denoise" or progress.fraction >= 1.0 or now - last_stage["time"] > 5:
            print(f"[{progress.stage}] {progress.message}", file=sys.stderr, flush=True)
            last_stage.update(stage=progress.stage, time=now)

    return say


def _finish_progress(quiet: bool) -> None:
    if not quiet and sys.stderr.isatty():
        print(file=sys.stderr)
