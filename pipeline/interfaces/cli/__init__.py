"""``python -m pipeline`` and its subcommands: one module each (``generate`` for a single photo, ``batch``
for a catalogue, ``serve`` for the REST endpoint on Ray Serve), sharing ``common``. Each builds its parser and turns the
flags into a call of the layers
below; none holds a workflow of its own."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline.contract.errors import BackdropError
from pipeline.contract.settings import check_settings
from pipeline.interfaces.cli import generate
from pipeline.interfaces.cli.common import report_error, run_command

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_settings()  # every variable, before the flags' help, which shows the defaults the environment sets
    except BackdropError as error:
        return report_error(error)
    if argv[:1] == ["batch"]:
        from pipeline.interfaces.cli import batch  # the catalogue's modules only when asked for

        parser, command, argv = batch.build_parser(), batch.run, argv[1:]
    elif argv[:1] == ["serve"]:  # the REST endpoint on Ray Serve (docs/SCALE.md)
        from pipeline.interfaces.cli import serve

        parser, command, argv = serve.build_parser(), serve.run, argv[1:]
    else:
        parser, command = generate.build_parser(), generate.run
    return run_command(command, parser.parse_args(argv))
