"""The Hugging Face Spaces deployment: the README's front matter, and app.py with and without ``spaces``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from pipeline.models import SDXL_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md must start with YAML front matter"
    return yaml.safe_load(match.group(1))


def test_front_matter_is_a_valid_space_configuration():
    config = front_matter()
    pinned = re.search(r"^gradio==([\w.]+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert config["title"] and config["emoji"] and config["sdk"] == "gradio"
    assert config["sdk_version"] == pinned
    assert config["app_file"] == "app.py" and (ROOT / config["app_file"]).is_file()
    assert str(config["python_version"]) == "3.11"
    assert config["suggested_hardware"] in {"t4-small", "t4-medium", "a10g-small", "a10g-large", "a10g-largex2",
                                            "a100-large", "l4x1", "l40sx1", "zero-a10g"}
    assert 0 < len(config["short_description"]) <= 60
    defaults = {SDXL_DEFAULTS.base, SDXL_DEFAULTS.controlnet, SDXL_DEFAULTS.ip_adapter, SDXL_DEFAULTS.vae}
    assert defaults <= set(config["models"])
    preloaded = {entry.split()[0] for entry in config["preload_from_hub"]}
    assert defaults <= preloaded
    ip_files = next(entry for entry in config["preload_from_hub"] if entry.startswith(SDXL_DEFAULTS.ip_adapter))
    assert f"{SDXL_DEFAULTS.ip_adapter_subfolder}/{SDXL_DEFAULTS.ip_adapter_weight_name}" in ip_files
    assert f"{SDXL_DEFAULTS.image_encoder_subfolder}/model.safetensors" in ip_files


PROBE = textwrap.dedent("""
    import app
    from pipeline import BgReplaceRequest
    from PIL import Image
    demo = app.build_demo(model_set="tiny", output_dir="{out}")
    image = Image.new("RGB", (128, 128))
    request = BgReplaceRequest(image=image, ref_image=image, prompt="x", num_inference_steps=40, samples=2)
    print("built", type(demo).__name__, getattr(app.generate_on_gpu, "wrapped_by", "plain"))
    print("seconds", app._gpu_seconds(request), app._gpu_seconds(request.replace(scheduler="Euler", samples=1)))
""")


def probe(tmp_path: Path, with_spaces: bool) -> str:
    path = [str(ROOT)]
    if with_spaces:
        stand_in = tmp_path / "stand_in"
        stand_in.mkdir()
        (stand_in / "spaces.py").write_text(textwrap.dedent("""
            def GPU(duration=60):
                def wrap(function):
                    def on_gpu(*args, **kwargs):
                        return function(*args, **kwargs)
                    on_gpu.wrapped_by = "spaces.GPU" if callable(duration) else "fixed"
                    return on_gpu
                return wrap
        """))
        path.insert(0, str(stand_in))
    done = subprocess.run([sys.executable, "-c", PROBE.format(out=tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=os.environ | {"PYTHONPATH": os.pathsep.join(path)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_app_builds_without_spaces(tmp_path):
    assert "built Blocks plain" in probe(tmp_path, with_spaces=False)


def test_app_wraps_gpu_work_in_spaces_gpu_with_an_estimated_duration(tmp_path):
    output = probe(tmp_path, with_spaces=True)
    assert "built Blocks spaces.GPU" in output
    # DPM2 Karras (second order): 2 samples x 40 steps x 2 passes = 160 UNet passes -> 30 + 48 s
    assert "seconds 78 42" in output
