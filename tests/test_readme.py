"""The README's examples, run as a reader runs them: each code block is read from README.md itself (not
copied here), run from a fresh folder holding real-size photos (a few MB) under the names the examples
use, against a live server (tiny model set). Only the server's address is changed, to the test's port."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from scenes import camera_photo
from servers import running_studio

pytestmark = pytest.mark.slow  # a live server, camera-size photos, npm and subprocesses: minutes

ROOT = Path(__file__).resolve().parent.parent
README_URL = "http://127.0.0.1:7860"
KEY = "readme-key"
PHOTO_SIZES = {"assets/product-perfume.jpg": (3000, 4000), "assets/scene-jungle.jpg": (3000, 3000)}


def readme_block(language: str, marker: str) -> str:
    """The one ```language code block of README.md that contains ``marker``."""
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", (ROOT / "README.md").read_text(), flags=re.M | re.S)
    found = [code for lang, code in blocks if lang == language and marker in code]
    assert len(found) == 1, f"README.md should hold one {language} block with {marker!r}, not {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    (folder / "assets").mkdir()
    for name, size in PHOTO_SIZES.items():
        shutil.copyfile(camera_photo(Path(name).name, size), folder / name)
    return folder


@pytest.fixture
def reader_dir(photos, tmp_path) -> Path:
    """A reader's fresh working folder: real-size photos under the examples' names, nothing else."""
    shutil.copytree(photos / "assets", tmp_path / "assets")
    return tmp_path


@pytest.fixture
def clone_dir(tmp_path) -> Path:
    """A reader's folder with the repository's own pictures, as a fresh clone has them (smaller, faster)."""
    for name in PHOTO_SIZES:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.fixture(scope="module")
def server(tmp_path_factory, u2netp_home, tiny_models):
    # The examples name no mask model: the server's default is the one this machine has (u2netp). A key is
    # required, so the examples' way of sending it is tested too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BACKDROP_MASK_MODEL", "u2netp")
        patch.setenv("BACKDROP_API_KEYS", KEY)
        with running_studio(tmp_path_factory.mktemp("out")) as url:
            yield url


def as_written(code: str, url: str) -> str:
    assert README_URL in code
    return code.replace(README_URL, url)


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=os.environ | env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def assert_result(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.size == size, path


def test_the_photos_are_real_sized(photos):
    for name in PHOTO_SIZES:
        data = (photos / name).read_bytes()
        assert len(data) > 2_000_000  # a few MB, as a camera's JPEG
        assert len(base64.b64encode(data)) > 131_072  # more than one command-line argument may hold (Linux)


def test_readme_curl_example(server, reader_dir):
    code = as_written(readme_block("sh", "/v1/bg-replace"), server)
    run(["bash", "-c", "set -o pipefail\n" + code], reader_dir, BACKDROP_API_KEY=KEY)
    assert_result(reader_dir / "result.jpg", PHOTO_SIZES["assets/product-perfume.jpg"])


def test_readme_python_example(server, reader_dir):
    code = as_written(readme_block("python", "/v1/bg-replace"), server)
    run([sys.executable, "-c", code], reader_dir, BACKDROP_API_KEY=KEY)
    results = sorted(reader_dir.glob("result_*.jpg"))
    assert len(results) == 2  # samples 2: both images, each named by its seed
    for path in results:
        assert_result(path, PHOTO_SIZES["assets/product-perfume.jpg"])


@pytest.fixture(scope="module")
def axios(tmp_path_factory) -> Path:
    """A folder with axios installed (``npm install axios``, as the example's first line says)."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("Node.js and npm are not installed")
    folder = tmp_path_factory.mktemp("node")
    try:
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), "axios"],
                       capture_output=True, check=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"axios could not be installed from the npm registry: {error}")
    return folder / "node_modules"


def test_readme_javascript_example(server, reader_dir, axios):
    code = as_written(readme_block("javascript", "/v1/bg-replace"), server)
    (reader_dir / "bg_replace.js").write_text(code)
    result = run(["node", "bg_replace.js"], reader_dir, BACKDROP_API_KEY=KEY, NODE_PATH=str(axios))
    assert result.stdout.strip() == "seed 42"
    assert_result(reader_dir / "result.jpg", PHOTO_SIZES["assets/product-perfume.jpg"])


def test_readme_gradio_client_example(server, clone_dir):
    code = as_written(readme_block("python", "from gradio_client"), server + "/")
    run([sys.executable, "-c", code + "\nassert len(gallery) == 2, gallery\n"], clone_dir, BACKDROP_API_KEY=KEY)


# --- the command line and the library, on the tiny model set ------------------------------------------------

@pytest.fixture
def tiny_reader_dir(clone_dir, u2netp_home) -> tuple[Path, dict[str, str]]:
    """The reader's folder with the project's .venv in it (the examples start .venv/bin/python), and the
    environment that picks the tiny models and the mask model this machine has."""
    (clone_dir / ".venv").symlink_to(Path(sys.prefix))
    return clone_dir, {"BACKDROP_MODEL_SET": "tiny", "BACKDROP_MASK_MODEL": "u2netp",
                        "PYTHONPATH": str(ROOT)}


def test_readme_cli_example(tiny_reader_dir):
    folder, env = tiny_reader_dir
    code = readme_block("sh", "--image assets/product-perfume.jpg")
    run(["bash", "-c", code], folder, **env)
    for name in ("results/product-perfume_42.jpg", "results/product-perfume_43.jpg"):  # as the README says
        assert_result(folder / name, Image.open(ROOT / "assets/product-perfume.jpg").size)
        assert (folder / name).with_suffix(".json").is_file()


def test_readme_library_example(tiny_reader_dir):
    folder, env = tiny_reader_dir
    code = readme_block("python", "from pipeline import")
    result = run([sys.executable, "-c", code], folder, **env)
    assert "Step 25/25" in result.stdout  # on_progress=print
    assert len(list(folder.glob("perfume_*.png"))) == 2
