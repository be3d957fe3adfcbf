"""What every benchmark shares: the repository on the import path, offline model folders, the machine's
description, a Markdown table on stdout and a JSON report on disk."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "assets"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its advice about optional backends is not ours
os.environ.setdefault("U2NET_HOME", str(ROOT / ".cache" / "u2net"))
os.environ.setdefault("BACKDROP_CACHE", str(ROOT / ".cache" / "backdrop"))


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare a row with their own: CPU, cores, memory, library versions."""
    import numpy
    import PIL

    facts: dict[str, Any] = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "memory_gib": _memory_gib(),
        "python": platform.python_version(), "numpy": numpy.__version__, "pillow": PIL.__version__,
    }
    for module in ("torch", "diffusers", "onnxruntime", "cv2"):
        if module in sys.modules:
            facts[module] = getattr(sys.modules[module], "__version__", "?")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def reset_peak_rss() -> None:
    """Start the peak-memory count again from now (Linux; elsewhere the peak stays the process's)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """This process's peak resident memory since start or the last ``reset_peak_rss``."""
    peak = status_mib("VmHWM")
    if peak is None:  # not Linux: the process's own peak (KiB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    return round(peak, 1)


def rss_mib() -> float:
    """This process's resident memory now."""
    now = status_mib("VmRSS")
    return peak_rss_mib() if now is None else now


def status_mib(field: str, pid: int | str = "self") -> float | None:
    """A memory line (``VmRSS``, ``VmHWM``) of a process's Linux status file, in MiB; None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cpu_ticks() -> tuple[int, int] | None:
    """(ticks stolen by the hypervisor, all ticks) of every CPU since boot, from Linux's /proc/stat; None
    elsewhere. On a shared virtual machine stolen time is what makes one run slower than the last."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user and nice]
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def stolen_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the CPUs' time between two ``cpu_ticks`` readings that the hypervisor took."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def timed(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The median of ``repeats`` timed calls (after none: callers warm up themselves) and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats to 3 decimals."""
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def jpeg_bytes(image: Any, *, orientation: int = 1, quality: int = 92) -> bytes:
    """``image`` as a camera would store it: JPEG with an EXIF orientation tag."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, exif=exif)
    return buffer.getvalue()


def parse_size(text: str) -> tuple[int, int]:
    """"1024x1024" as (1024, 1024), for the benchmarks' --sizes."""
    width, _, height = text.lower().partition("x")
    return int(width), int(height)
