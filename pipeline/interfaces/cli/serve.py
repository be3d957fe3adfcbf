"""``python -m pipeline serve --ray [ADDRESS]``: the REST endpoint on a Ray cluster (docs/SCALE.md).

The studio (``python app.py``) serves the same ``/v1`` routes on one machine; this command serves them
from Ray Serve replicas, one GPU each, autoscaled between ``--replicas MIN:MAX``.
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.contract.choices import MODEL_SETS
from pipeline.contract.errors import BackdropError
from pipeline.contract.settings import setting
from pipeline.interfaces.cli.common import OneLineParser

AUTO_ADDRESS = "auto"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m pipeline serve",
                           description="Serve POST /v1/bg-replace and GET /v1/health from Ray Serve replicas "
                                       "(the same contract, errors, limits and API keys as python app.py).")
    add_ray_flag(parser)
    parser.add_argument("--host", default="0.0.0.0", help="Where Serve's HTTP proxy listens. Default: 0.0.0.0.")
    parser.add_argument("--port", type=int, default=8000, metavar="N", help="Default: 8000.")
    parser.add_argument("--replicas", default="1", metavar="MIN:MAX",
                        help="Replicas (one GPU each), scaled on the requests waiting. Default: 1, or 1:G "
                             "where the cluster has G GPUs.")
    parser.add_argument("--model-set", choices=MODEL_SETS, default=setting("BACKDROP_MODEL_SET"),
                        help="Default: BACKDROP_MODEL_SET or sdxl.")
    return parser


def add_ray_flag(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS], shared with ``batch``: where the Ray cluster is (docs/SCALE.md)."""
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="Run on Ray (docs/SCALE.md): no address starts a local Ray runtime on this machine; "
                             "'auto' joins the cluster this machine belongs to (ray start); ray://HOST:10001 "
                             "connects as a client.")


def run(args: argparse.Namespace) -> int:
    from pipeline.interfaces.serve_ray import ServeOptions, start_serving
    from pipeline.workflows.ray_cluster import cluster_gpus, connect, forwarded_env, parse_range

    if args.ray is None:
        raise BackdropError("serve runs on Ray only: add --ray (a local runtime), --ray auto or --ray ray://HOST:PORT; "
                            "for one machine, python app.py serves the same endpoint", field="--ray")
    if not 1 <= args.port <= 65535:
        raise BackdropError(f"{args.port} is not a port; expected 1 to 65535", field="--port")
    parse_range(args.replicas, field_name="--replicas")  # a mistake is said before Ray starts
    ray = connect(args.ray or None)
    gpus = cluster_gpus(ray)
    default_replicas = f"1:{gpus}" if gpus > 1 and args.replicas == "1" else args.replicas
    low, high = parse_range(default_replicas, field_name="--replicas")
    options = ServeOptions(model_set=args.model_set, port=args.port, host=args.host, min_replicas=low,
                           max_replicas=high, gpus_per_replica=1 if gpus else 0, env=forwarded_env())
    print(f"backdrop: starting {low} replica(s) (up to {high}) on {'GPUs' if gpus else 'CPUs'}; loading the "
          f"{args.model_set} models...", file=sys.stderr, flush=True)
    url = start_serving(options)
    print(f"REST endpoint: POST {url}/v1/bg-replace (Ctrl-C stops serving)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
        return 0
