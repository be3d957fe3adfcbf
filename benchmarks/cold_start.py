"""Cold start: ``python app.py`` until the studio page, and the REST health check, answer HTTP 200.

    python benchmarks/cold_start.py [--repeats 3]

Each run is a fresh process on a free port with no model loaded (models load on the first generation).
Also reports the server's resident memory once it answers. Prints a table and writes
benchmarks/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, machine, status_mib, table, write_report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def one_start(timeout: float) -> dict[str, Any]:
    port = free_port()
    env = os.environ | {"BACKDROP_PORT": str(port), "BACKDROP_HOST": "127.0.0.1"}
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        times: dict[str, float] = {}
        urls = {"page": f"http://127.0.0.1:{port}/", "health": f"http://127.0.0.1:{port}/v1/health"}
        while len(times) < len(urls):
            if server.poll() is not None:
                raise RuntimeError(f"app.py exited with {server.returncode}: {server.stderr.read()[-2000:]}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"app.py did not answer within {timeout} s")
            for name, url in urls.items():
                if name not in times and answers(url):
                    times[name] = time.perf_counter() - started
            time.sleep(0.05)
        with urllib.request.urlopen(urls["health"], timeout=5) as response:
            health = json.load(response)
        return {"page_seconds": times["page"], "health_seconds": times["health"],
                "rss_mib": status_mib("VmRSS", server.pid), "models_loaded": health["models_loaded"]}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=RESULTS / "cold_start.json")
    args = parser.parse_args(argv)

    runs = [one_start(args.timeout) for _ in range(args.repeats)]
    summary = {key: statistics.median(run[key] for run in runs) for key in ("page_seconds", "health_seconds")}
    summary["rss_mib"] = max((run["rss_mib"] or 0) for run in runs)
    summary["models_loaded"] = any(run["models_loaded"] for run in runs)
    report = {"benchmark": "cold_start", "repeats": args.repeats, "machine": machine(), "runs": runs,
              "median": summary}
    print(table(["python app.py, no model loaded", f"median of {args.repeats} s"], [
        ["first HTTP 200 from the studio page /", summary["page_seconds"]],
        ["first HTTP 200 from /v1/health", summary["health_seconds"]],
        ["server memory then (RSS, MiB)", summary["rss_mib"]],
    ]))
    write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
