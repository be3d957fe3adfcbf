"""Model configuration and loading: the tiny set goes through the same from_pretrained code as SDXL."""

from __future__ import annotations

import json

import pytest

from pipeline import BackdropError, ModelLoadError
from pipeline.backends.local.models import SDXL_DEFAULTS, load_models, model_spec, resolve_runtime
from pipeline.backends.local.schedulers import make_scheduler
from pipeline.contract.choices import SCHEDULER_NAMES


def test_tiny_models_load_through_the_hub_layouts(tiny_models):
    pipe = tiny_models.pipe
    spec = tiny_models.spec
    assert type(pipe).__name__ == "BackdropInpaintPipeline"
    assert pipe.unet.config.in_channels == 9  # an inpainting UNet
    assert pipe.controlnet.config.in_channels == 4
    assert pipe.image_encoder is not None and pipe.unet.encoder_hid_proj is not None  # IP-Adapter attached
    assert spec.ip_adapter_subfolder == SDXL_DEFAULTS.ip_adapter_subfolder
    assert spec.ip_adapter_weight_name == SDXL_DEFAULTS.ip_adapter_weight_name
    assert spec.image_encoder_subfolder == SDXL_DEFAULTS.image_encoder_subfolder


def test_models_load_once_and_are_reused(tiny_models):
    assert load_models("tiny", device="cpu") is tiny_models
    assert tiny_models.info()["model_set"] == "tiny" and tiny_models.info()["dtype"] == "float32"


def test_sdxl_defaults_are_the_hub_ids_of_the_spec(monkeypatch):
    for name in ("BACKDROP_CONFIG", "BACKDROP_BASE_MODEL", "BACKDROP_CONTROLNET"):
        monkeypatch.delenv(name, raising=False)
    spec = model_spec("sdxl")
    assert spec.base == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    assert spec.controlnet == "diffusers/controlnet-canny-sdxl-1.0"
    assert (spec.ip_adapter, spec.ip_adapter_subfolder) == ("h94/IP-Adapter", "sdxl_models")
    assert spec.image_encoder_subfolder == "sdxl_models/image_encoder"
    assert spec.vae == "madebyollin/sdxl-vae-fp16-fix"


def test_environment_and_config_file_override_each_id(monkeypatch, tmp_path):
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"controlnet": "diffusers/controlnet-canny-sdxl-1.0-small", "vae": ""}))
    monkeypatch.setenv("BACKDROP_CONFIG", str(config))
    monkeypatch.setenv("BACKDROP_BASE_MODEL", "my/photoreal-inpaint")
    spec = model_spec("sdxl")
    assert spec.base == "my/photoreal-inpaint"
    assert spec.controlnet == "diffusers/controlnet-canny-sdxl-1.0-small"
    assert spec.vae == ""
    monkeypatch.setenv("BACKDROP_CONTROLNET", "local/folder")
    assert model_spec("sdxl").controlnet == "local/folder"  # the environment wins over the file


def test_bad_config_files_are_explained(monkeypatch, tmp_path):
    config = tmp_path / "models.json"
    monkeypatch.setenv("BACKDROP_CONFIG", str(config))
    with pytest.raises(BackdropError, match="^BACKDROP_CONFIG: cannot read the model config file"):
        model_spec("sdxl")
    config.write_text('{"unet": "x"}')
    with pytest.raises(BackdropError, match="unknown key\\(s\\) unet; allowed: base, controlnet"):
        model_spec("sdxl")


def test_unknown_model_set():
    with pytest.raises(BackdropError, match="^model_set: 'sd15' is unknown; expected one of sdxl, tiny"):
        model_spec("sd15")


def test_a_model_that_cannot_load_names_itself_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDROP_CONTROLNET", str(tmp_path / "no-such-controlnet"))
    with pytest.raises(ModelLoadError) as caught:
        load_models("sdxl", device="cpu")
    message = str(caught.value)
    assert "could not load the ControlNet" in message and "no-such-controlnet" in message
    assert "BACKDROP_CONTROLNET" in message and "HF_HUB_OFFLINE" in message
    assert caught.value.exit_code == 1


def test_runtime_defaults_and_errors(monkeypatch):
    for name in ("BACKDROP_DEVICE", "BACKDROP_DTYPE", "BACKDROP_MEMORY_MODE"):
        monkeypatch.delenv(name, raising=False)
    runtime = resolve_runtime(device="cpu")
    assert (runtime.dtype, runtime.memory_mode) == ("float32", "none")
    monkeypatch.setenv("BACKDROP_MEMORY_MODE", "model")
    assert resolve_runtime(device="cpu").memory_mode == "model"
    with pytest.raises(BackdropError, match="^device: 'tpu' is unknown"):
        resolve_runtime(device="tpu")
    with pytest.raises(BackdropError, match="^dtype: 'int8' is unknown"):
        resolve_runtime(device="cpu", dtype="int8")
    with pytest.raises(BackdropError, match="^memory_mode: 'all' is unknown; expected one of none, model, sequential"):
        resolve_runtime(device="cpu", memory_mode="all")


def test_cuda_without_a_gpu_is_explained():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackdropError, match="^device: cuda was asked for but no CUDA GPU is available"):
        resolve_runtime(device="cuda")


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_scheduler_names_map_to_the_right_diffusers_classes(tiny_models, name):
    scheduler = make_scheduler(name, tiny_models.scheduler_config)
    expected = {
        "DDIM": "DDIMScheduler", "DPM Multi": "DPMSolverMultistepScheduler",
        "DPM Single": "DPMSolverSinglestepScheduler", "Euler a": "EulerAncestralDiscreteScheduler",
        "Euler": "EulerDiscreteScheduler", "Heun": "HeunDiscreteScheduler",
        "DPM2 a Karras": "KDPM2AncestralDiscreteScheduler", "DPM2 Karras": "KDPM2DiscreteScheduler",
        "LMS": "LMSDiscreteScheduler", "PNDM": "PNDMScheduler", "UniPC": "UniPCMultistepScheduler",
        "DPM++ 2M Karras": "DPMSolverMultistepScheduler",
    }[name]
    assert type(scheduler).__name__ == expected
    assert bool(scheduler.config.get("use_karras_sigmas")) == ("Karras" in name)


class FlakyModel:
    """A model class whose from_pretrained fails with ``errors`` in turn, then loads; it records each call."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.calls = list(errors), []

    def from_pretrained(self, model_id, **kwargs):
        self.calls.append(kwargs.get("variant"))
        if self.errors:
            raise self.errors.pop(0)
        return "loaded"


@pytest.mark.parametrize("error", [
    OSError("org/cn does not appear to have a file named diffusion_pytorch_model.fp16.safetensors."),
    OSError("Error no file named diffusion_pytorch_model.fp16.safetensors found in directory /models/cn."),
    ValueError("You are trying to load the model files of the `variant=fp16`, but no such modeling files are "
               "available."),
])
def test_the_fp16_variant_falls_back_to_full_precision_when_its_files_are_missing(error):
    from pipeline.backends.local.models import _from_pretrained

    model = FlakyModel(error)
    assert _from_pretrained(model, "org/cn", "ControlNet", "controlnet", "float16", "fp16") == "loaded"
    assert model.calls == ["fp16", None]


@pytest.mark.parametrize("error", [
    OSError("There was a specific connection error when trying to load org/cn: 503 Service Unavailable"),
    OSError("org/cn is not a local folder and is not a valid model identifier"),
    ValueError("Cannot load <class 'ControlNetModel'> from org/cn: config.json is not valid JSON"),
    OSError("org/cn does not appear to have a file named config.json."),
])
def test_other_load_errors_are_reported_without_downloading_the_full_precision_files(error):
    from pipeline.backends.local.models import _from_pretrained

    model = FlakyModel(error, OSError("a second error that would hide the first"))
    with pytest.raises(ModelLoadError) as caught:
        _from_pretrained(model, "org/cn", "ControlNet", "controlnet", "float16", "fp16")
    assert model.calls == ["fp16"]
    assert str(error).split(":")[0] in str(caught.value) and "second error" not in str(caught.value)


def test_a_real_folder_without_fp16_files_loads_its_full_precision_weights(tiny_models):
    from diffusers import ControlNetModel

    from pipeline.backends.local.models import _from_pretrained

    controlnet = _from_pretrained(ControlNetModel, tiny_models.spec.controlnet, "ControlNet", "controlnet",
                                  None, "fp16")
    assert controlnet.config.in_channels == 4


def test_the_tiny_scheduler_config_is_sdxls_so_other_samplers_get_sdxls_settings(tiny_models):
    """Keys Euler ignores still reach the other samplers: without SDXL's clip_sample false and
    set_alpha_to_one false, DDIM would take its own defaults (true) and differ from the real models'."""
    from pipeline.backends.local.tiny import SDXL_SCHEDULER_CONFIG

    config = tiny_models.scheduler_config
    assert {key: config.get(key) for key in SDXL_SCHEDULER_CONFIG if not key.startswith("_")} == {
        key: value for key, value in SDXL_SCHEDULER_CONFIG.items() if not key.startswith("_")}
    ddim = make_scheduler("DDIM", config)
    assert (ddim.config.clip_sample, ddim.config.set_alpha_to_one, ddim.config.steps_offset) == (False, False, 1)
    assert make_scheduler("PNDM", config).config.skip_prk_steps is True


def test_the_tiny_unet_has_two_cross_attention_widths_like_sdxl(tiny_models):
    from diffusers.models.attention import BasicTransformerBlock

    for model in (tiny_models.pipe.unet, tiny_models.pipe.controlnet):
        blocks = [block for block in model.modules() if isinstance(block, BasicTransformerBlock)]
        widths = {block.norm1.normalized_shape[0] for block in blocks}
        assert len(widths) == 2, widths
