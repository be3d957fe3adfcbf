"""What the environment sets at start-up: the default mask model (BACKDROP_MASK_MODEL) and the warning
when the real models would run on a machine without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline import BackdropError, BgReplaceRequest
from pipeline.contract.choices import MASK_MODELS

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = "expected one of 'birefnet-general-lite', 'birefnet-general', 'birefnet-massive'"


def component(demo, elem_id: str):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


# --- BACKDROP_MASK_MODEL ------------------------------------------------------------------------------------

def test_mask_model_default_comes_from_the_environment(monkeypatch, bottle, reference):
    fields = {"image": bottle[0], "ref_image": reference, "prompt": "bottle"}
    assert BgReplaceRequest(**fields).mask_model == "birefnet-general-lite"
    monkeypatch.setenv("BACKDROP_MASK_MODEL", "U2NetP ")  # spelt as a person might
    assert BgReplaceRequest(**fields).mask_model == "u2netp"
    assert BgReplaceRequest.from_dict(fields).mask_model == "u2netp"
    assert BgReplaceRequest.from_dict(fields | {"mask_model": None}).mask_model == "u2netp"
    assert BgReplaceRequest(**fields, mask_model="silueta").mask_model == "silueta"  # the request still wins


def test_an_unknown_mask_model_in_the_environment_names_the_variable_value_and_choices(monkeypatch, bottle,
                                                                                      reference):
    from pipeline.contract.settings import check_settings

    monkeypatch.setenv("BACKDROP_MASK_MODEL", "bria-rmbg")
    with pytest.raises(BackdropError) as caught:
        check_settings()
    message = str(caught.value)
    assert message.startswith("BACKDROP_MASK_MODEL: 'bria-rmbg' is not allowed; " + ALLOWED)
    assert all(repr(name) in message for name in MASK_MODELS)
    with pytest.raises(BackdropError, match="^BACKDROP_MASK_MODEL: 'bria-rmbg'"):
        BgReplaceRequest(image=bottle[0], ref_image=reference, prompt="bottle")


def test_the_cli_stops_at_once_on_an_unknown_mask_model(tmp_path):
    env = os.environ | {"BACKDROP_MASK_MODEL": "nope"}
    for command in ([], ["batch"]):
        result = subprocess.run([sys.executable, "-m", "pipeline", *command, "--help"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("backdrop: error: BACKDROP_MASK_MODEL: 'nope' is not allowed; " + ALLOWED)


def test_the_cli_help_shows_the_default_the_environment_sets():
    env = os.environ | {"BACKDROP_MASK_MODEL": "u2netp"}
    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "Default: u2netp. (BACKDROP_MASK_MODEL sets the default.)" in " ".join(result.stdout.split())


def test_the_studio_and_rest_stop_at_start_up_on_an_unknown_mask_model(monkeypatch, capsys):
    import app
    from pipeline.interfaces.rest import mount_rest

    monkeypatch.setenv("BACKDROP_MASK_MODEL", "nope")
    monkeypatch.setattr(app, "launch_studio", lambda **kwargs: pytest.fail("the studio started"))
    with pytest.raises(SystemExit) as caught:
        app.main(["--model-set", "tiny"])
    assert caught.value.code == 2
    assert "backdrop: error: BACKDROP_MASK_MODEL: 'nope' is not allowed; " + ALLOWED in capsys.readouterr().err
    with pytest.raises(BackdropError, match="^BACKDROP_MASK_MODEL: 'nope'"):
        mount_rest(None, model_set="tiny", queue=None)


def test_the_studio_mask_model_dropdown_starts_on_the_environments_choice(monkeypatch):
    import app

    monkeypatch.setenv("BACKDROP_MASK_MODEL", "u2netp")
    demo = app.build_demo(model_set="tiny")
    assert component(demo, "mask_model").value == "u2netp"
    generate = next(fn for fn in demo.fns.values() if fn.api_name == "generate")
    assert generate.fn.__signature__.parameters["mask_model"].default == "u2netp"


# --- no GPU, no surprise ------------------------------------------------------------------------------------

@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a CUDA or MPS GPU, whatever it really has; nothing may be downloaded."""
    from pipeline.backends.local import models

    monkeypatch.setattr(models, "_best_device", lambda torch: "cpu")
    monkeypatch.setattr(models, "_may_have_gpu", lambda: True)  # so torch is asked (and says no)
    monkeypatch.delenv("BACKDROP_DEVICE", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setattr(models, "_load", lambda *args: pytest.fail("models were loaded (or downloaded)"))
    return models


def test_without_a_gpu_generate_refuses_sdxl_before_any_download(no_gpu, monkeypatch, bottle, reference):
    from pipeline import NoGpu, generate
    from pipeline.stages import masking

    monkeypatch.setattr(masking, "subject_alpha", lambda *a, **k: pytest.fail("the mask model ran first"))
    request = BgReplaceRequest(image=bottle[0], ref_image=reference, prompt="bottle", mask_model="u2netp")
    with pytest.raises(NoGpu) as caught:
        generate(request, model_set="sdxl")
    message = str(caught.value)
    assert message.startswith("no CUDA or Apple MPS GPU was found: the sdxl model set would download")
    for way_on in ("a machine with a CUDA or Apple MPS GPU", "Hosted API", "--model-set tiny",
                   "BACKDROP_MODEL_SET=tiny", "BACKDROP_DEVICE=cpu"):
        assert way_on in message
    assert caught.value.exit_code == 1 and caught.value.http_status == 503


def test_without_a_gpu_the_cpu_can_still_be_chosen_by_name(no_gpu, monkeypatch):
    loads = []
    monkeypatch.setattr(no_gpu, "_load", lambda spec, runtime, say: loads.append(runtime.device) or "models")
    monkeypatch.setattr(no_gpu, "_loaded", {})  # the session's loaded tiny models stay apart
    assert no_gpu.load_models("sdxl", device="cpu") == "models"
    monkeypatch.setattr(no_gpu, "_loaded", {})
    monkeypatch.setenv("BACKDROP_DEVICE", "cpu")
    assert no_gpu.load_models("sdxl") == "models" and loads == ["cpu", "cpu"]


def test_the_warning_is_only_for_sdxl_without_a_gpu(no_gpu, monkeypatch):
    assert no_gpu.no_gpu_warning("sdxl").startswith("No GPU found: the sdxl model set would download")
    assert no_gpu.no_gpu_warning("tiny") is None
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # a ZeroGPU Space lends a GPU per generation
    assert no_gpu.no_gpu_warning("sdxl") is None
    monkeypatch.delenv("SPACES_ZERO_GPU")
    monkeypatch.setenv("BACKDROP_DEVICE", "cpu")
    assert no_gpu.no_gpu_warning("sdxl") is None
    monkeypatch.delenv("BACKDROP_DEVICE")
    monkeypatch.setattr(no_gpu, "_best_device", lambda torch: "cuda")
    assert no_gpu.no_gpu_warning("sdxl") is None
    monkeypatch.setattr(no_gpu, "_may_have_gpu", lambda: False)  # no driver: torch is not even imported
    assert no_gpu.no_gpu_warning("sdxl").startswith("No GPU found")


def test_the_studio_says_so_under_its_title_and_in_the_log(no_gpu, monkeypatch, caplog):
    import app

    note = component(app.build_demo(model_set="sdxl"), "no_gpu_note").value
    assert note.startswith("**No GPU found") and "Hosted API" in note and "BACKDROP_DEVICE=cpu" in note
    assert not any(getattr(block, "elem_id", None) == "no_gpu_note"
                   for block in app.build_demo(model_set="tiny").blocks.values())

    class Started:
        def block_thread(self):
            pass

    monkeypatch.setattr(app, "launch_studio", lambda **kwargs: Started())
    app.main(["--model-set", "sdxl"])
    assert any(record.levelname == "WARNING" and record.message.startswith("No GPU found")
               for record in caplog.records)


def test_the_cli_refuses_sdxl_without_a_gpu_with_exit_1(no_gpu, monkeypatch, tmp_path, capsys):
    from pipeline.interfaces.cli import main

    photo = tmp_path / "perfume.jpg"
    Image.open(ROOT / "assets" / "product-perfume.jpg").save(photo)
    code = main(["--image", str(photo), "--ref", str(photo), "--prompt", "x", "--model-set", "sdxl",
                 "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 1 and error.startswith("backdrop: error: no CUDA or Apple MPS GPU was found")
    assert not (tmp_path / "out").exists()


# --- what a first load downloads ----------------------------------------------------------------------------

SDXL_LIKE = [("sd_xl_base_1.0.safetensors", 7_000), ("unet/diffusion_pytorch_model.safetensors", 10_000),
             ("unet/diffusion_pytorch_model.fp16.safetensors", 5_000), ("unet/diffusion_pytorch_model.bin", 10_000),
             ("text_encoder/model.safetensors", 400), ("text_encoder/model.fp16.safetensors", 200),
             ("vae/diffusion_pytorch_model.safetensors", 300), ("unet/config.json", 1)]


def test_the_files_a_load_needs_follow_variant_subfolder_and_passed_components():
    from pipeline.backends.local.downloads import needed_files

    pipeline_fp16 = needed_files(SDXL_LIKE, variant="fp16", pipeline_skips=("vae",))
    assert sorted(pipeline_fp16) == [("text_encoder/model.fp16.safetensors", 200),
                                     ("unet/diffusion_pytorch_model.fp16.safetensors", 5_000)]
    assert sorted(needed_files(SDXL_LIKE, pipeline_skips=())) == [
        ("text_encoder/model.safetensors", 400), ("unet/diffusion_pytorch_model.safetensors", 10_000),
        ("vae/diffusion_pytorch_model.safetensors", 300)]
    assert needed_files(SDXL_LIKE, subfolder="unet", variant="fp16") == [
        ("unet/diffusion_pytorch_model.fp16.safetensors", 5_000)]
    assert needed_files(SDXL_LIKE, subfolder="text_encoder", weight_name="model.safetensors") == [
        ("text_encoder/model.safetensors", 400)]


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A hub that lists one 3 MB file for org/model, and an empty cache folder; nothing touches the network."""
    import huggingface_hub
    from huggingface_hub import constants

    from pipeline.backends.local import downloads

    listing = type("Info", (), {"siblings": [type("File", (), {"rfilename": "model.safetensors", "size": 3_000_000})]})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, **kwargs: listing)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(downloads, "POLL_SECONDS", 0.05)
    blobs = tmp_path / "models--org--model" / "blobs"
    blobs.mkdir(parents=True)
    return blobs


def test_a_download_says_what_how_big_and_how_far(fake_hub):
    import time

    from pipeline.backends.local.downloads import reporting_download

    said = []
    with reporting_download("org/model", said.append):  # the load, writing its blob as the hub client does
        for written in (1_000_000, 3_000_000):
            (fake_hub / "abc.incomplete").write_bytes(b"\0" * written)
            time.sleep(0.5)
    assert said[0] == "Downloading org/model: 1 file(s), 3 MB (first run only)"
    assert "Downloading org/model: 1 MB of 3 MB (33%)" in said
    assert said[-1] == "Downloading org/model: 3 MB of 3 MB (100%)"


def test_nothing_is_said_when_the_files_are_already_here_or_offline(fake_hub, monkeypatch):
    import huggingface_hub

    from pipeline.backends.local.downloads import reporting_download

    said = []
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: f"/cache/{name}")
    with reporting_download("org/model", said.append):
        pass
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # files missing, but nothing can be fetched: the load says why
    with reporting_download("org/model", said.append):
        pass
    assert said == []


@pytest.mark.slow
def test_the_studio_and_rest_refuse_generate_without_a_gpu_with_the_ways_on(no_gpu, u2netp_home, tmp_path):
    import base64

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from servers import post_json, running_studio

    photo = ROOT / "assets" / "product-perfume.jpg"
    with running_studio(tmp_path / "out", model_set="sdxl") as url:
        with pytest.raises(AppError, match="no CUDA or Apple MPS GPU was found.*Hosted API.*BACKDROP_DEVICE=cpu"):
            Client(f"{url}/", verbose=False).predict(image=handle_file(str(photo)), ref_image=handle_file(str(photo)),
                                                     prompt="perfume", mask_model="u2netp", api_name="/generate")
        b64 = base64.b64encode(photo.read_bytes()).decode()
        reply = post_json(f"{url}/v1/bg-replace", {"image": b64, "ref_image": b64, "prompt": "perfume"})
        assert reply.status_code == 503 and "--model-set tiny" in reply.json()["error"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
