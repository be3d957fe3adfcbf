"""The REST endpoint on Ray Serve: the same ``/v1`` app as the studio's server, in autoscaled replicas.

Each replica is a Ray actor holding one GPU (a CPU where the cluster has none), its models loaded once
when it starts, and its own one-at-a-time GPU line (``GenerationQueue``). The routes are
``interfaces.rest.create_rest_app``, mounted at ``/v1`` behind ``interfaces.access.KeyGuard`` exactly as
``python app.py`` mounts them: one implementation, so contract, errors, limits and keys cannot drift.

Scaling: Serve counts each replica's ongoing requests (running plus waiting at it) and keeps
``target_ongoing_requests`` per replica by adding or removing replicas between ``--replicas MIN:MAX``.
Requests beyond ``max_ongoing_requests`` wait in Serve's proxy, not in a replica.

No request batching across callers (``serve.batch``): see docs/SCALE.md, "Why requests are not batched".

Ray is imported only here and in workflows.ray_cluster; nothing the studio or ``make run`` imports reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A replica runs one generation and holds one more ready, so the GPU never waits for the next request's
# decoding; the autoscaler aims at one running per replica.
MAX_ONGOING_PER_REPLICA = 2
TARGET_ONGOING_PER_REPLICA = 1


@dataclass(frozen=True)
class ServeOptions:
    model_set: str
    port: int
    host: str = "0.0.0.0"
    min_replicas: int = 1
    max_replicas: int = 1
    gpus_per_replica: float = 0  # 0: the replicas use CPUs (a cluster without GPUs, and the tests)
    cpus_per_replica: float = 1  # also the threads torch uses on a CPU-only replica (Ray sets OMP_NUM_THREADS)
    env: dict[str, str] = field(default_factory=dict)


def build_backdrop_app(options: ServeOptions) -> Any:
    """The Serve application: the ``/v1`` routes in a deployment scaled between the options' bounds."""
    from ray import serve

    actor_options: dict[str, Any] = {"runtime_env": {"env_vars": options.env}} if options.env else {}
    if options.gpus_per_replica:
        actor_options["num_gpus"] = options.gpus_per_replica
    else:
        actor_options["num_cpus"] = options.cpus_per_replica
    deployment = serve.deployment(
        serve.ingress()(BackdropReplica),
        name="backdrop",
        ray_actor_options=actor_options,
        max_ongoing_requests=MAX_ONGOING_PER_REPLICA,
        autoscaling_config={"min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
                            "initial_replicas": options.min_replicas,
                            "target_ongoing_requests": TARGET_ONGOING_PER_REPLICA,
                            "upscale_delay_s": 5, "downscale_delay_s": 120},
        # Loading SDXL takes minutes on a fresh node; Serve must not count that against the replica.
        health_check_timeout_s=120,
    )
    return deployment.bind(options.model_set)


class BackdropReplica:
    """One replica: its models loaded at start, its own GPU line, the shared ``/v1`` app in front."""

    def __init__(self, model_set: str) -> None:
        from pipeline.backends.local.models import load_models
        from pipeline.workflows.queue import GenerationQueue

        self.model_set = model_set
        self.queue = GenerationQueue()
        load_models(model_set)  # now, not on the first request: Serve routes to it once this returns

    def __serve_build_asgi_app__(self) -> Any:
        return rest_root(model_set=self.model_set, queue=self.queue)


def rest_root(*, model_set: str, queue: Any) -> Any:
    """A server app holding only ``/v1``, behind the same key and origin guard as the studio's server."""
    from fastapi import FastAPI
    from starlette.middleware import Middleware

    from pipeline.contract.settings import check_settings
    from pipeline.interfaces.access import KeyGuard
    from pipeline.interfaces.rest import create_rest_app

    check_settings()  # a replica with a bad variable stops, named, before it serves
    root = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, middleware=[Middleware(KeyGuard)])
    root.mount("/v1", create_rest_app(model_set=model_set, queue=queue))
    return root


def start_serving(options: ServeOptions) -> str:
    """Start Serve's HTTP proxy on the options' host and port and deploy the app; return its base URL.
    Returns once the minimum number of replicas answer (their models are loaded)."""
    from ray import serve

    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(build_backdrop_app(options), name="backdrop", route_prefix="/", blocking=False)
    shown = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    return f"http://{shown}:{options.port}"
