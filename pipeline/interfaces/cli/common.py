"""What every subcommand of ``python -m pipeline`` shares: one-line usage errors, the request flags, progress
on stderr, and turning an error into one line and an exit code."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.contract.choices import DTYPES, MEMORY_MODES, MODEL_SETS
from pipeline.contract.errors import BackdropError
from pipeline.contract.request import FIELDS, IMAGE_FIELDS
from pipeline.contract.result import Progress, ProgressCallback
from pipeline.contract.settings import setting

# Image fields are file paths on the command line; "base64" only shapes hosted/REST replies.
_CLI_SKIPS = {*IMAGE_FIELDS, "base64"}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit 2, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
        text = f"{spec.help} Allowed: {spec.allowed()}.{default}".replace("%", "%%")  # % is argparse's format sign
        parser.add_argument(*flags, dest=name, required=spec.required and ref_required, metavar=_metavar(spec.kind),
                            help=text)
    parser.add_argument("--backend", choices=("local", "hosted"), default="local",
                        help="local (this machine's GPU or CPU) or hosted (the bg-replace API; key from "
                             "SEGMIND_API_KEY, address from SEGMIND_API_URL). Default: local.")
    parser.add_argument("--model-set", choices=MODEL_SETS, default=setting("BACKDROP_MODEL_SET"),
                        help="sdxl (real models from the hub) or tiny (random tiny models for tests). "
                             "Default: BACKDROP_MODEL_SET or sdxl.")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu. Default: the best available.")
    parser.add_argument("--dtype", choices=DTYPES, help="Default: float16 on a GPU, float32 on CPU.")
    parser.add_argument("--memory-mode", choices=MEMORY_MODES,
                        help="none (fastest), model (CPU offload per model) or sequential (least VRAM).")
    parser.add_argument("--out", required=True, type=Path, help="Folder for the images and their .json sidecars.")
    parser.add_argument("--quiet", action="store_true", help="No progress on stderr.")


def _metavar(kind: str) -> str:
    return {"int": "N", "float": "X", "choice": "NAME", "str": "TEXT", "canvas": "SIZE"}.get(kind, "VALUE")


def request_values(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields given on the command line (unset flags left out, so defaults and presets apply)."""
    values = {name: getattr(args, name) for name in FIELDS
              if name not in _CLI_SKIPS and getattr(args, name, None) is not None}
    if args.ref_image:
        values["ref_image"] = Path(args.ref_image)
    if args.mask:
        values["mask"] = Path(args.mask)
    return values


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``command(args)``'s exit code; a user error is one line and its own code (2, or 1 for a missing GPU),
    Ctrl-C 130, and a bug one line and 1 unless BACKDROP_DEBUG asks for the trace."""
    try:
        return command(args)
    except BackdropError as error:
        return report_error(error)
    except KeyboardInterrupt:
        print("backdrop: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not a user mistake: one line unless asked for the trace
        if setting("BACKDROP_DEBUG"):
            raise
        print(f"backdrop: internal error: {type(error).__name__}: {error} (BACKDROP_DEBUG=1 shows the trace)",
              file=sys.stderr)
        return 1


def report_error(error: BackdropError) -> int:
    print(f"backdrop: error: {error}", file=sys.stderr)
    return error.exit_code


def progress_printer(*, quiet: bool) -> ProgressCallback:
    """Each stage's progress as a line on stderr; denoising steps redrawn in place on a terminal, else at
    most one line every 5 seconds."""
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


def finish_progress(quiet: bool) -> None:
    """End a line redrawn in place, so what follows starts on its own."""
    if not quiet and sys.stderr.isatty():
        print(file=sys.stderr)
