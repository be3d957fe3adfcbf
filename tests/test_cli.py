"""``python -m pipeline`` as a user runs it: outputs and sidecars, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scenes import perfume_bottle, reference_scene

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    photo, _ = perfume_bottle(720, 480)
    photo.save(folder / "bottle.jpg", quality=95)
    reference_scene("wood", 256, 256).save(folder / "wood.png")
    return folder / "bottle.jpg", folder / "wood.png"


@pytest.mark.slow
def test_cli_writes_images_and_sidecars(u2netp_home, photo_files, tmp_path):
    photo, reference = photo_files
    result = cli("--image", str(photo), "--ref", str(reference), "--prompt", "bottle on an oak table",
                 "--negative-prompt", "blur", "--samples", "2", "--seed", "42", "--scheduler", "Euler a",
                 "--num-inference-steps", "20", "--cn-weight", "0.7", "--ip-adapter-weight", "0.4",
                 "--guidance-scale", "6", "--strength", "1", "--mask-model", "u2netp",
                 "--model-set", "tiny", "--out", str(tmp_path / "out"), "--format", "png")
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in paths] == ["bottle_42.png", "bottle_43.png"]
    for path, seed in zip(paths, (42, 43)):
        assert Image.open(path).size == (720, 480)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["seed"] == seed and sidecar["seeds"] == [42, 43]
        assert sidecar["request"]["prompt"] == "bottle on an oak table"
        assert sidecar["request"]["cn_weight"] == 0.7 and sidecar["request"]["scheduler"] == "Euler a"
        assert sidecar["info"]["model_set"] == "tiny"
    assert "[denoise]" in result.stderr


@pytest.mark.slow
def test_two_cli_runs_of_one_request_and_seed_write_byte_identical_images(u2netp_home, photo_files, tmp_path):
    """What a saved image embeds reproduces it (request, seed, models), never the run's timings, so the same
    command twice writes the same bytes: a catalogue rerun can be checked with a checksum."""
    photo, reference = photo_files
    made = []
    for run in ("first", "second"):
        result = cli("--image", str(photo), "--ref", str(reference), "--prompt", "bottle", "--seed", "9",
                     "--scheduler", "Euler", "--num-inference-steps", "20", "--resolution", "64",
                     "--mask-model", "u2netp", "--model-set", "tiny", "--out", str(tmp_path / run), "--quiet")
        assert result.returncode == 0, result.stderr
        made.append(Path(result.stdout.split()[0]))
    assert made[0].name == made[1].name and made[0].read_bytes() == made[1].read_bytes()
    # the sidecars differ only in what the run took (timings), which the image leaves out
    first, second = (json.loads(path.with_suffix(".json").read_text()) for path in made)
    assert {key: value for key, value in first.items() if key != "timings"} == \
        {key: value for key, value in second.items() if key != "timings"}


@pytest.mark.slow
def test_cli_defaults_to_jpeg(u2netp_home, photo_files, tmp_path):
    photo, reference = photo_files
    result = cli("--image", str(photo), "--ref", str(reference), "--prompt", "bottle", "--seed", "1",
                 "--num-inference-steps", "20", "--scheduler", "Euler", "--resolution", "64",
                 "--mask-model", "u2netp", "--model-set", "tiny", "--out", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr
    (path,) = [Path(line) for line in result.stdout.split()]
    assert path.suffix == ".jpg" and Image.open(path).format == "JPEG" and result.stderr.strip() == ""
    assert np.asarray(Image.open(path)).shape == (480, 720, 3)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cn-weight", "1.5"], "cn_weight: '1.5' is out of range; expected a number from 0 to 1"),
        (["--samples", "five"], "samples: 'five' is not a number; expected a whole number from 1 to 4"),
        (["--scheduler", "Turbo"], "scheduler: 'Turbo' is unknown; expected one of 'DDIM'"),
        (["--num-inference-steps", "5"], "num_inference_steps: '5' is out of range"),
        (["--shadow", "dramatic"], "shadow: 'dramatic' is unknown; expected one of 'none', 'contact'"),
        (["--shadow-opacity", "2"], "shadow_opacity: '2' is out of range; expected a number from 0 to 1"),
        (["--shadow-angle", "north"], "shadow_angle: 'north' is not a number; expected a number from 0 to 360"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(photo_files, tmp_path, flags, message):
    photo, reference = photo_files
    result = cli("--image", str(photo), "--ref", str(reference), "--prompt", "x", "--model-set", "tiny",
                 "--out", str(tmp_path), *flags)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


def test_cli_unreadable_image_exits_2(photo_files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    result = cli("--image", str(broken), "--ref", str(photo_files[1]), "--prompt", "x", "--model-set", "tiny",
                 "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("backdrop: error: image: ")


def test_cli_missing_argument_is_one_line(tmp_path):
    result = cli("--prompt", "x", "--out", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "required" in result.stderr and "--image" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["single", "batch"])
def test_cli_mask_model_that_cannot_load_exits_1(photo_files, tmp_path, monkeypatch, command):
    """A model that cannot load exits 1, as the README promises (2 is for the user's own mistakes)."""
    home = tmp_path / "u2net"
    home.mkdir()
    (home / "silueta.onnx").write_bytes(b"")  # an interrupted download: there, but not a model
    monkeypatch.setenv("U2NET_HOME", str(home))
    photo, reference = photo_files
    where = ["batch", str(photo.parent)] if command == "batch" else ["--image", str(photo)]
    result = cli(*where, "--ref", str(reference), "--prompt", "x", "--model-set", "tiny", "--mask-model", "silueta",
                 "--num-inference-steps", "20", "--resolution", "64", "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr
    assert "mask model 'silueta' could not be loaded" in result.stderr


@pytest.mark.slow
def test_cli_shadow_and_light_flags_reach_the_sidecar_and_the_summary(u2netp_home, photo_files, tmp_path):
    photo, reference = photo_files
    result = cli("--image", str(photo), "--ref", str(reference), "--prompt", "bottle", "--seed", "5",
                 "--num-inference-steps", "20", "--scheduler", "Euler", "--resolution", "64", "--mask-model", "u2netp",
                 "--model-set", "tiny", "--out", str(tmp_path), "--shadow", "Hard", "--shadow-opacity", "0.7",
                 "--shadow-angle", "45", "--shadow-softness", "0.2", "--shadow-length", "1.2", "--reflection", "0.3",
                 "--light-match", "0.5")
    assert result.returncode == 0, result.stderr
    (path,) = [Path(line) for line in result.stdout.split()]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert {key: sidecar["request"][key] for key in ("shadow", "shadow_opacity", "shadow_angle", "shadow_softness",
                                                     "shadow_length", "reflection", "light_match")} == {
        "shadow": "hard", "shadow_opacity": 0.7, "shadow_angle": 45.0, "shadow_softness": 0.2, "shadow_length": 1.2,
        "reflection": 0.3, "light_match": 0.5}
    (change,) = sidecar["info"]["product_change"]
    assert change > 0 and f"product colours adjusted by light match (mean change {change:g} levels)" in result.stderr
