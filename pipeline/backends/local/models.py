"""Which models to load, on what device, and loading them once.

Two model sets share one loading path: ``sdxl`` (hub ids, each overridable by environment variable or a
JSON config file) and ``tiny`` (random tiny components saved to a cache folder, for tests and demos).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.choices import DTYPES, MEMORY_MODES, MODEL_SETS
from pipeline.contract.errors import BackdropError, ModelLoadError, NoGpu
from pipeline.contract.settings import config_keys, setting, setting_default


def default_model_set() -> str:
    """BACKDROP_MODEL_SET, or "sdxl"."""
    return setting("BACKDROP_MODEL_SET")


@dataclass(frozen=True)
class ModelSpec:
    """What identifies a model set: hub ids or local folders for each component."""

    name: str
    base: str
    controlnet: str
    ip_adapter: str
    ip_adapter_subfolder: str
    ip_adapter_weight_name: str
    image_encoder: str
    image_encoder_subfolder: str
    vae: str  # "" = the base model's own VAE
    native_resolution: int
    variant: str  # weight variant to prefer in half precision ("" = none)


# The sdxl set's ids: each one's default, environment variable and BACKDROP_CONFIG file key are in
# contract.settings, which also reads the file (the environment wins over it).
ENV_OVERRIDES = config_keys()  # field name -> environment variable
SDXL_DEFAULTS = ModelSpec(name="sdxl", **{key: setting_default(env) for key, env in ENV_OVERRIDES.items()})


def model_spec(model_set: str = "sdxl") -> ModelSpec:
    """The ids for ``model_set``; for ``sdxl`` the config file first, then environment variables, win."""
    if model_set == "tiny":
        return tiny_spec()
    if model_set != "sdxl":
        raise BackdropError(f"{model_set!r} is unknown; expected one of {', '.join(MODEL_SETS)}", field="model_set")
    return ModelSpec(name="sdxl", **{key: setting(env) for key, env in ENV_OVERRIDES.items()})


def tiny_spec() -> ModelSpec:
    from pipeline.backends.local.tiny import NATIVE_RESOLUTION, ensure_tiny_models

    root = ensure_tiny_models()
    return ModelSpec(
        name="tiny",
        base=str(root / "base"),
        controlnet=str(root / "controlnet"),
        ip_adapter=str(root / "ip_adapter"),
        ip_adapter_subfolder="sdxl_models",
        ip_adapter_weight_name="ip-adapter_sdxl.safetensors",
        image_encoder=str(root / "ip_adapter"),
        image_encoder_subfolder="sdxl_models/image_encoder",
        vae="",
        native_resolution=NATIVE_RESOLUTION,
        variant="",
    )


@dataclass(frozen=True)
class Runtime:
    """Where and how the models run."""

    device: str
    dtype: str
    memory_mode: str


def resolve_runtime(device: str | None = None, dtype: str | None = None, memory_mode: str | None = None) -> Runtime:
    """Arguments, then BACKDROP_DEVICE / BACKDROP_DTYPE / BACKDROP_MEMORY_MODE, then the best available:
    CUDA in float16, Apple MPS in float16, else CPU in float32 (half precision is slow or unsupported there)."""
    import torch

    device = device or setting("BACKDROP_DEVICE") or _best_device(torch)
    if device.split(":")[0] not in ("cuda", "mps", "cpu"):
        raise BackdropError(f"{device!r} is unknown; expected cuda, cuda:N, mps or cpu", field="device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackdropError("cuda was asked for but no CUDA GPU is available; use cpu", field="device")
    if device == "mps" and not torch.backends.mps.is_available():
        raise BackdropError("mps was asked for but Apple's Metal backend is not available", field="device")
    dtype = dtype or setting("BACKDROP_DTYPE") or ("float32" if device == "cpu" else "float16")
    if dtype not in DTYPES:
        raise BackdropError(f"{dtype!r} is unknown; expected one of {', '.join(DTYPES)}", field="dtype")
    memory_mode = memory_mode or setting("BACKDROP_MEMORY_MODE")
    if memory_mode not in MEMORY_MODES:
        raise BackdropError(
            f"{memory_mode!r} is unknown; expected one of {', '.join(MEMORY_MODES)}", field="memory_mode"
        )
    return Runtime(device=device, dtype=dtype, memory_mode=memory_mode)


# The ways on from a machine without a GPU, for the start-up note and the refusal at Generate.
_WAYS_ON = ("Run Backdrop on a machine with a CUDA or Apple MPS GPU, switch the Backend to Hosted API "
            "(--backend hosted), or try the plumbing with the tiny random models (--model-set tiny, or "
            "BACKDROP_MODEL_SET=tiny). To run the real models on this CPU anyway, set BACKDROP_DEVICE=cpu "
            "(--device cpu).")
_ON_CPU = ("the sdxl model set would download several GB (about 11 GB for the default models) on the first "
           "Generate, then take tens of minutes per image on the CPU.")


def gpu_available() -> bool:
    """Whether this process has a CUDA or MPS GPU. A ZeroGPU Space counts: it lends one per generation."""
    if os.environ.get("SPACES_ZERO_GPU"):
        return True
    if not _may_have_gpu():  # importing torch to ask takes seconds at start-up; no driver, no GPU
        return False
    import torch

    return _best_device(torch) != "cpu"


def _may_have_gpu() -> bool:
    """False only where no GPU driver shows itself: Linux without NVIDIA (or ROCm, or WSL's) device nodes."""
    if not sys.platform.startswith("linux"):
        return True  # macOS may have MPS; elsewhere torch is asked
    dev = Path("/dev")
    return any(dev.glob("nvidia*")) or (dev / "kfd").exists() or (dev / "dxg").exists()


def no_gpu_warning(model_set: str) -> str | None:
    """What to tell a user at start-up when the real models would run on this machine's CPU (None when
    they would not: a GPU, the tiny set, or a device chosen by name)."""
    if model_set != "sdxl" or setting("BACKDROP_DEVICE") or gpu_available():
        return None
    return f"No GPU found: {_ON_CPU} {_WAYS_ON}"


def _refuse_cpu_for_sdxl(spec: ModelSpec, runtime: Runtime, device: str | None) -> None:
    """Stop before any download when the real models would land on a CPU nobody asked for."""
    if spec.name == "sdxl" and runtime.device == "cpu" and not (device or setting("BACKDROP_DEVICE")):
        raise NoGpu(f"no CUDA or Apple MPS GPU was found: {_ON_CPU} {_WAYS_ON}")


def _best_device(torch: Any) -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class LoadedModels:
    """A ready pipeline and what it was built from."""

    pipe: Any
    spec: ModelSpec
    runtime: Runtime
    scheduler_config: dict[str, Any]
    speed: list[str] = dataclasses.field(default_factory=list)  # speed-ups applied (pipeline.backends.local.speed)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # one generation at a time

    def info(self) -> dict[str, Any]:
        """Model ids and runtime, for run summaries and saved metadata (no secrets live here)."""
        return {"model_set": self.spec.name, **dataclasses.asdict(self.runtime), "speed_ups": list(self.speed),
                "models": _model_ids(self.spec)}


def _model_ids(spec: ModelSpec) -> dict[str, str]:
    return {
        "base": spec.base,
        "controlnet": spec.controlnet,
        "ip_adapter": f"{spec.ip_adapter}/{spec.ip_adapter_subfolder}/{spec.ip_adapter_weight_name}",
        "image_encoder": f"{spec.image_encoder}/{spec.image_encoder_subfolder}",
        "vae": spec.vae or "(base model's)",
    }


LoadProgress = Callable[[str], None]

_loaded: dict[tuple[ModelSpec, Runtime], LoadedModels] = {}
_load_lock = threading.Lock()


def load_models(
    model_set: str = "sdxl",
    *,
    device: str | None = None,
    dtype: str | None = None,
    memory_mode: str | None = None,
    on_progress: LoadProgress | None = None,
) -> LoadedModels:
    """The pipeline for ``model_set`` on the resolved runtime: loaded on first use, then reused."""
    spec = model_spec(model_set)
    runtime = resolve_runtime(device, dtype, memory_mode)
    _refuse_cpu_for_sdxl(spec, runtime, device)
    key = (spec, runtime)
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = _load(spec, runtime, on_progress or (lambda message: None))
        return _loaded[key]


def loaded_model_sets() -> list[dict[str, Any]]:
    """What is in memory now (for health checks and the UI's summary)."""
    with _load_lock:
        return [models.info() for models in _loaded.values()]


def _load(spec: ModelSpec, runtime: Runtime, say: LoadProgress) -> LoadedModels:
    # transformers warns at import time about optional backends (torchvision) we do not use.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from diffusers import AutoencoderKL, ControlNetModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from pipeline.backends.local.diffusion import BackdropInpaintPipeline
    from pipeline.backends.local.downloads import reporting_download

    quiet_libraries()
    dtype = getattr(torch, runtime.dtype)
    variant = spec.variant if runtime.dtype == "float16" and spec.variant else None
    say(f"Loading the ControlNet ({spec.controlnet})")
    with reporting_download(spec.controlnet, say, variant=variant):
        controlnet = _from_pretrained(ControlNetModel, spec.controlnet, "ControlNet", "controlnet", dtype, variant)
    say(f"Loading the IP-Adapter image encoder ({spec.image_encoder}/{spec.image_encoder_subfolder})")
    with reporting_download(spec.image_encoder, say, subfolder=spec.image_encoder_subfolder):
        image_encoder = _from_pretrained(
            CLIPVisionModelWithProjection, spec.image_encoder, "image encoder", "image_encoder", dtype, None,
            subfolder=spec.image_encoder_subfolder,
        )
    # The hub's encoder folders carry no preprocessor config; derive it from the encoder's input size.
    side = image_encoder.config.image_size
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    components: dict[str, Any] = {"controlnet": controlnet, "image_encoder": image_encoder,
                                  "feature_extractor": feature_extractor}
    if spec.vae:
        say(f"Loading the VAE ({spec.vae})")
        with reporting_download(spec.vae, say):
            components["vae"] = _from_pretrained(AutoencoderKL, spec.vae, "VAE", "vae", dtype, None)
    say(f"Loading the SDXL inpainting model ({spec.base})")
    with reporting_download(spec.base, say, variant=variant, pipeline_skips=tuple(components)):
        pipe = _from_pretrained(
            BackdropInpaintPipeline, spec.base, "base model", "base", dtype, variant, **components
        )
    say(f"Loading the IP-Adapter ({spec.ip_adapter}/{spec.ip_adapter_subfolder}/{spec.ip_adapter_weight_name})")
    try:
        with reporting_download(spec.ip_adapter, say, subfolder=spec.ip_adapter_subfolder,
                                weight_name=spec.ip_adapter_weight_name):
            pipe.load_ip_adapter(
                spec.ip_adapter, subfolder=spec.ip_adapter_subfolder, weight_name=spec.ip_adapter_weight_name,
                image_encoder_folder=None,
            )
    except Exception as exc:
        raise _load_error("IP-Adapter", spec.ip_adapter, "ip_adapter", exc) from exc
    return assemble(pipe, spec, runtime, say)


def assemble(pipe: Any, spec: ModelSpec, runtime: Runtime, say: LoadProgress | None = None,
             speed: Any = None) -> LoadedModels:
    """Speed up and place a built pipeline (IP-Adapter loaded) on its device: the last steps of loading,
    shared by ``load_models`` and benchmarks/gpu.py, which builds full-size models from configs and passes
    its own ``speed`` (``SpeedOptions``) to measure each speed-up on its own."""
    from pipeline.backends.local.speed import SpeedOptions, speed_up

    say = say or (lambda message: None)
    options = speed or SpeedOptions.for_runtime(runtime.device, runtime.memory_mode)
    if options.applied():
        say(f"Speed-ups: {', '.join(options.applied())}")
    speed_up(pipe, options)
    _place(pipe, runtime, say)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModels(pipe=pipe, spec=spec, runtime=runtime, scheduler_config=dict(pipe.scheduler.config),
                        speed=options.applied())


def _from_pretrained(cls: Any, model_id: str, what: str, field: str, dtype: Any, variant: str | None,
                     **kwargs: Any) -> Any:
    try:
        try:
            return cls.from_pretrained(model_id, dtype=dtype, variant=variant, **kwargs)
        except (OSError, ValueError) as exc:
            if variant is None or not variant_is_missing(exc, variant):
                raise  # a network, config or permission error: the fp32 files (twice the download) would not help
            # Not every repo publishes an fp16 variant; the full-precision files load and convert too.
            return cls.from_pretrained(model_id, dtype=dtype, **kwargs)
    except Exception as exc:
        raise _load_error(what, model_id, field, exc) from exc


def variant_is_missing(exc: BaseException, variant: str) -> bool:
    """Whether ``exc`` says no more than that ``variant``'s weight files are not there, in diffusers' words:
    a model's "no file named <name>.<variant>.safetensors" (local folder) or "does not appear to have a file
    named ..." (hub), or a pipeline's "`variant=<variant>`, but no such modeling files are available"."""
    text = " ".join(str(exc).split())
    named_file = ("no file named" in text or "does not appear to have a file named" in text) and f".{variant}." in text
    return named_file or f"variant={variant}`, but no such modeling files are available" in text


def _load_error(what: str, model_id: str, field: str, exc: Exception) -> ModelLoadError:
    env = ENV_OVERRIDES.get(field, "BACKDROP_CONFIG")
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    offline = (" (HF_HUB_OFFLINE is set: only already-downloaded models can load)"
               if os.environ.get("HF_HUB_OFFLINE") else "")
    return ModelLoadError(
        f"could not load the {what} {model_id!r}{offline}: {reason}. Check the id and your network "
        f"(the first run downloads the weights), or point {env} at a local folder."
    )


def _place(pipe: Any, runtime: Runtime, say: LoadProgress) -> None:
    if runtime.device.startswith("cuda") and runtime.memory_mode == "model":
        say("Enabling model CPU offload")
        pipe.enable_model_cpu_offload(device=runtime.device)
    elif runtime.device.startswith("cuda") and runtime.memory_mode == "sequential":
        say("Enabling sequential CPU offload")
        pipe.enable_sequential_cpu_offload(device=runtime.device)
    else:  # offload only saves GPU memory; on CPU or MPS there is nothing to offload to
        say(f"Moving the models to {runtime.device}")
        pipe.to(runtime.device)


def quiet_libraries() -> None:
    """Silence the libraries' progress bars and advice aimed at their developers, not our users."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
