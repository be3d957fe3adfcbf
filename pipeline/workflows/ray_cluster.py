"""Joining or starting a Ray runtime, for the Ray batch (workflows.ray_batch) and the Ray Serve endpoint
(interfaces.serve_ray). Ray is imported inside the functions: the studio and ``make run`` never need it."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from pipeline.contract.errors import BackdropError

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder holding pipeline/: what Ray workers import from
# Passed to every worker and replica: the configuration the driver was started with (keys, limits, model
# set, model caches). On a real cluster they run in other processes, on other nodes.
FORWARDED_ENV_PREFIXES = ("BACKDROP_", "HF_", "U2NET_", "SEGMIND_")


def parse_range(text: str, *, field_name: str) -> tuple[int, int]:
    """``"2"`` -> (2, 2); ``"1:4"`` -> (1, 4); anything else a BackdropError naming the flag."""
    parts = text.split(":")
    if len(parts) in (1, 2) and all(part.strip().isdigit() for part in parts):
        low, high = int(parts[0]), int(parts[-1])
        if 1 <= low <= high:
            return low, high
    raise BackdropError(f"{text!r} is not a count or MIN:MAX range of whole numbers with 1 <= MIN <= MAX "
                        "(e.g. 2 or 1:4)", field=field_name)


def forwarded_env() -> dict[str, str]:
    """Backdrop's settings from this process's environment, and an import path to the project."""
    env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_ENV_PREFIXES)}
    path = os.pathsep.join(part for part in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if part)
    return env | {"PYTHONPATH": path}


def connect(address: str | None, **init_options: Any) -> Any:
    """Join (``auto``, ``ray://HOST:PORT``) or start (no address) a Ray runtime; return the ``ray`` module.
    A runtime already started in this process (the tests' shared one) is used as it is.

    ``init_options`` go to ``ray.init`` when the runtime is started here (``num_cpus`` and the like)."""
    try:
        import ray
    except ImportError:
        raise BackdropError("needs Ray, which is optional: pip install -c constraints.txt -r requirements-ray.txt",
                            field="--ray") from None
    if ray.is_initialized():
        return ray
    reachable(address)
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "runtime_env": {"env_vars": forwarded_env()}}
    try:
        ray.init(**options, **({"address": address} if address else init_options))
    except (ConnectionError, ValueError, RuntimeError) as error:  # RuntimeError: a head that stopped answering
        raise _unanswered(address, str(error).splitlines()[0] if str(error) else type(error).__name__) from None
    return ray


def check_address(address: str | None) -> None:
    """``--ray``'s address, checked before anything starts: none or ``local`` (a runtime on this machine),
    ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``."""
    if not address or address in ("auto", "local") or _host_and_port(address):
        return
    raise BackdropError(f"{address!r} is not a Ray address; give none (a local runtime on this machine), auto (the "
                        "cluster this machine joined with `ray start`), HOST:PORT or ray://HOST:10001", field="--ray")


def reachable(address: str | None, timeout: float = 5.0) -> None:
    """``address`` checked (``check_address``), and where it is a HOST:PORT (or ray://) one, taking a connection
    within ``timeout`` seconds: Ray itself would retry an address where nothing listens for minutes."""
    check_address(address)
    found = _host_and_port(address or "")
    if found is None:
        return
    try:
        socket.create_connection(found, timeout=timeout).close()
    except OSError as error:
        raise _unanswered(address, error.strerror or type(error).__name__) from None


def _host_and_port(address: str) -> tuple[str, int] | None:
    matched = re.fullmatch(r"(?:ray://)?\[?([\w.\-:]+?)\]?:(\d+)", address)
    return (matched.group(1), int(matched.group(2))) if matched else None


def _unanswered(address: str | None, reason: str) -> BackdropError:
    return BackdropError(f"no Ray cluster answered at {address!r} ({reason}); start one with `make ray-cluster` "
                         "(this machine) or `ray start --head`, or give --ray with no address to start a local "
                         "runtime", field="--ray")


def cluster_gpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("GPU", 0))
