"""The Hugging Face Spaces deployment: the README's front matter, and app.py with and without ``spaces``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.backends.local.models import ENV_OVERRIDES, SDXL_DEFAULTS

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
    from pipeline.interfaces.studio import zero_gpu
    from PIL import Image
    demo = app.build_demo(model_set="tiny", output_dir="{out}")
    image = Image.new("RGB", (128, 128))
    request = BgReplaceRequest(image=image, ref_image=image, prompt="x", num_inference_steps=40, samples=2)
    print("built", type(demo).__name__, getattr(zero_gpu._generate_in_gpu_worker, "wrapped_by", "plain"))
    print("seconds", zero_gpu._gpu_seconds(request), \
zero_gpu._gpu_seconds(request.replace(scheduler="Euler", samples=1)),
          zero_gpu._gpu_seconds(request.replace(scheduler="Euler", samples=1, guidance_scale=1, resolution=512)))
    if {generate}:
        stages = []
        mask = Image.new("L", (128, 128), 0)
        mask.paste(255, (32, 32, 96, 96))
        small = request.replace(num_inference_steps=20, samples=1, resolution=64, mask=mask, scheduler="Euler")
        result = zero_gpu.generate_on_gpu(small, "tiny", on_progress=lambda p: stages.append(p.stage),
                                     should_cancel=lambda: False)
        print("generated", len(result.images), result.images[0].size, stages)
""")


def probe(tmp_path: Path, with_spaces: bool, generate: bool = False) -> str:
    path = [str(ROOT)]
    env = dict(os.environ)
    if with_spaces:
        stand_in = tmp_path / "stand_in"
        stand_in.mkdir()
        # Like ZeroGPU: the function runs elsewhere, so its arguments and result must pickle (callbacks do not),
        # and the models must already be loaded in this process when it is called.
        (stand_in / "spaces.py").write_text(textwrap.dedent("""
            import pickle

            def GPU(duration=60):
                def wrap(function):
                    def on_gpu(*args, **kwargs):
                        from pipeline.backends.local.models import loaded_model_sets
                        print("models loaded before the GPU call:", bool(loaded_model_sets()))
                        args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                        return pickle.loads(pickle.dumps(function(*args, **kwargs)))
                    on_gpu.wrapped_by = "spaces.GPU" if callable(duration) else "fixed"
                    return on_gpu
                return wrap
        """))
        path.insert(0, str(stand_in))
        env["SPACES_ZERO_GPU"] = "true"
    code = PROBE.format(out=tmp_path / "out", generate=generate)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env | {"PYTHONPATH": os.pathsep.join(path)})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_app_builds_without_spaces(tmp_path):
    assert "built Blocks plain" in probe(tmp_path, with_spaces=False)


@pytest.mark.slow
def test_app_wraps_gpu_work_in_spaces_gpu_with_an_estimated_duration(tmp_path):
    output = probe(tmp_path, with_spaces=True, generate=True)
    assert "built Blocks spaces.GPU" in output
    # 10 s to start + 0.15 s per pass of one image at 1024²: DPM2 Karras (second order) x CFG x 2 samples x 40 steps
    # = 320 passes -> 58 s; Euler, 1 sample: 80 passes -> 22 s; no CFG at 512²: 40 quarter passes -> 12 s
    assert "seconds 58 22 12" in output
    # ZeroGPU: plain data in and out of the GPU function, the models loaded before it, the stages still reported
    assert "models loaded before the GPU call: True" in output
    assert "generated 1 (128, 128) ['load', 'denoise', 'compose']" in output


TOKENIZER_FILES = {  # the hub repos' slow-tokenizer files; the tiny set saves tokenizer.json instead
    "merges.txt": lambda tokenizer: "#version: 0.2\n",
    "vocab.json": lambda tokenizer: json.dumps(tokenizer.get_vocab()),
    "special_tokens_map.json": lambda tokenizer: json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>"}),
}


def preloaded_files() -> dict[str, list[str]]:
    entries = [entry.split() for entry in front_matter()["preload_from_hub"]]
    assert all(len(entry) == 2 for entry in entries), "each preload_from_hub entry must list its files"
    return {repo: files.split(",") for repo, files in entries}


def fake_hub_cache(cache: Path, files: dict[str, list[str]], tiny_root: Path) -> list[Path]:
    """A Hugging Face cache holding ``files`` of each repo and nothing else, made from the tiny set's files
    (an fp16 variant's name, from the full-precision file of the same component)."""
    from pipeline.backends.local.tiny import byte_tokenizer

    sources = {SDXL_DEFAULTS.base: tiny_root / "base", SDXL_DEFAULTS.controlnet: tiny_root / "controlnet",
               SDXL_DEFAULTS.ip_adapter: tiny_root / "ip_adapter", SDXL_DEFAULTS.vae: tiny_root / "base" / "vae"}
    written = []
    for repo, names in files.items():
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        for name in names:
            target = folder / "snapshots" / ("0" * 40) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = sources[repo] / name.replace(f".{SDXL_DEFAULTS.variant}.", ".")
            if source.is_file():
                shutil.copyfile(source, target)
            else:
                assert target.name in TOKENIZER_FILES, f"{repo}: {name} is not a file the models are made of"
                target.write_text(TOKENIZER_FILES[target.name](byte_tokenizer()))
            written.append(target)
    return written


@pytest.mark.slow
def test_spaces_preloads_exactly_the_files_backdrop_loads(tiny_models, tmp_path, monkeypatch):
    """The README's preload_from_hub, laid out as a Hugging Face cache (tiny weights under the real names),
    must be enough to load the sdxl set offline in float16, and every file in it must be read: no whole
    repositories, no fp32 or .bin copies baked into the Space's image."""
    import huggingface_hub.constants

    from pipeline.backends.local.models import _load, model_spec, resolve_runtime

    for env in ("BACKDROP_CONFIG", *ENV_OVERRIDES.values()):
        monkeypatch.delenv(env, raising=False)
    files = preloaded_files()
    assert set(files) == {SDXL_DEFAULTS.base, SDXL_DEFAULTS.controlnet, SDXL_DEFAULTS.ip_adapter, SDXL_DEFAULTS.vae}
    tiny_root = Path(tiny_models.spec.base).parent
    listed = fake_hub_cache(tmp_path / "hub", files, tiny_root)
    probe = tmp_path / "probe"
    probe.write_text("read me")
    for path in [*listed, probe]:
        modified = path.stat().st_mtime
        os.utime(path, (modified - 1000, modified))  # relatime records a read when the access time is older
    before = {path: path.stat().st_atime for path in [*listed, probe]}
    if probe.read_text() and probe.stat().st_atime <= before[probe]:
        pytest.skip("this file system does not record reads in access times")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    models = _load(model_spec("sdxl"), resolve_runtime("cpu", "float16", "none"), lambda message: None)
    assert {model.dtype for model in (models.pipe.unet, models.pipe.controlnet, models.pipe.vae)} == {torch_float16()}
    unread = [str(path.relative_to(tmp_path / "hub")) for path in listed if path.stat().st_atime <= before[path]]
    assert not unread, f"listed in preload_from_hub but never read: {unread}"


def torch_float16():
    import torch

    return torch.float16
