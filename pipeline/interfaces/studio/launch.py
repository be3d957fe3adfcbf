"""The studio's start-up: its command line, the checks before it listens, the key guard on every door,
the upload script, and the REST endpoint mounted on the same server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.backends.local.models import default_model_set
from pipeline.contract.errors import BackdropError
from pipeline.contract.settings import check_settings, setting
from pipeline.interfaces.rest import LOOPBACK_HOSTS, mount_rest
from pipeline.workflows.queue import gpu_queue

log = logging.getLogger("backdrop.app")
# Relabels a non-image file dropped on an image box so that check_upload names the box (see the file).
UPLOAD_JS = (Path(__file__).resolve().parent / "upload.js").read_text(encoding="utf-8").strip()


def guarded_app_kwargs() -> dict[str, Any]:
    """The server app's middleware that asks every door for a key when BACKDROP_API_KEYS is set."""
    from starlette.middleware import Middleware

    from pipeline.interfaces.access import KeyGuard

    return {"middleware": [Middleware(KeyGuard)]}


def launch(demo: Any, *, host: str, port: int, output_dir: Path, share: bool, quiet: bool) -> Any:
    """Serve the studio's Blocks ``demo`` and its REST endpoint (``/v1``) on one server without blocking."""
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(output_dir)],
                prevent_thread_lock=True, quiet=quiet, js=UPLOAD_JS, app_kwargs=guarded_app_kwargs())
    demo.studio.only_this_machine = host in LOOPBACK_HOSTS and not share
    mount_rest(demo.server_app, model_set=demo.studio.model_set, queue=gpu_queue, host=host)
    return demo


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a mistake in it or in the environment's defaults stops start-up, named (exit 2)."""
    try:
        check_settings()  # e.g. an unknown BACKDROP_MASK_MODEL or a bad BACKDROP_PORT stops start-up here, named
    except BackdropError as error:
        print(f"backdrop: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    parser = argparse.ArgumentParser(description="Backdrop studio")
    # Hugging Face Spaces (and Docker hosts) say where to listen through Gradio's own variables.
    parser.add_argument("--host", default=setting("BACKDROP_HOST") or os.environ.get("GRADIO_SERVER_NAME")
                        or "127.0.0.1")
    # A string default goes through type=int too: a bad GRADIO_SERVER_PORT is argparse's one-line error.
    parser.add_argument("--port", type=int, default=setting("BACKDROP_PORT")
                        or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    parser.add_argument("--model-set", choices=("sdxl", "tiny"), default=default_model_set())
    parser.add_argument("--output-dir", default=setting("BACKDROP_OUTPUT_DIR"))
    parser.add_argument("--share", action="store_true", help="Also serve on a public gradio.live link.")
    return parser.parse_args(argv)


def main(argv: list[str] | None, launch_studio: Callable[..., Any]) -> None:
    """``python app.py``: check, say what this machine lacks, start ``launch_studio`` and serve until stopped."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, not ours
    from pipeline.backends.local.models import no_gpu_warning

    if no_gpu := no_gpu_warning(args.model_set):
        log.warning(no_gpu)
    os.environ["BACKDROP_PORT"] = str(args.port)  # for the studio's "Copy as API request"
    # Gradio's own banner would advise `share=True in launch()`; this says it the way this command takes it.
    demo = launch_studio(host=args.host, port=args.port, model_set=args.model_set, output_dir=args.output_dir,
                         share=args.share, quiet=not args.share)
    print(f"Backdrop studio: http://{args.host}:{args.port}/" + ("" if args.share else " (--share adds a public link)"),
          flush=True)
    print(f"REST endpoint: POST http://{args.host}:{args.port}/v1/bg-replace (docs at /v1/docs)", flush=True)
    demo.block_thread()
