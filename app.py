"""Backdrop studio: the browser UI over the ``pipeline`` library. Loads no model until the first Generate.

    python app.py [--host 127.0.0.1] [--port 7860] [--model-set sdxl|tiny] [--share]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry or version pings from a studio
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from pipeline import FIELDS, BackdropError, BgReplaceRequest, GenerationCancelled, Progress, default_model_set  # noqa: E402
from pipeline.workflows.queue import gpu_queue  # noqa: E402
from pipeline.contract.settings import check_settings, setting  # noqa: E402
from pipeline.interfaces.rest import LOOPBACK_HOSTS, curl_example, mount_rest  # noqa: E402
from pipeline.contract.choices import SECOND_ORDER  # noqa: E402

log = logging.getLogger("backdrop.app")
ASSETS = Path(__file__).resolve().parent / "assets"
BACKENDS = ("Local GPU", "Hosted API")
COMPARE_MODES = ("Grid", "A/B", "Local vs Hosted")
QUEUE_SIZE = 16
# Overall progress: where each stage starts and how much of the bar it spans.
_STAGES = {"load": (0.0, 0.1), "mask": (0.1, 0.05), "denoise": (0.15, 0.8), "compose": (0.95, 0.05)}
EXAMPLES = [
    ["product-perfume.jpg", "scene-jungle.jpg", "perfume bottle on a mossy rock in a lush jungle, morning light"],
    ["product-shoe.jpg", "scene-wood.jpg", "running shoe on a rustic wooden deck, warm sunset light"],
    ["product-ring.jpg", "scene-marble.jpg", "gold ring with a diamond on white marble, soft studio light"],
    ["product-chair.jpg", "scene-studio.jpg", "wooden chair in a bright minimalist studio, soft shadows"],
]
# The studio's inputs, in the order of the /generate and /compare APIs: the request's own field names.
REQUEST_INPUTS = ("image", "ref_image", "prompt", "negative_prompt", "samples", "scheduler", "num_inference_steps",
                  "guidance_scale", "seed", "strength", "cn_weight", "ip_adapter_weight", "mask", "mask_model",
                  "mask_grow", "mask_feather", "canny_low", "canny_high", "resolution", "output_size",
                  "output_format", "backend", "api_key")
# What "Load settings" and presets restore: every request field but the images.
SETTING_INPUTS = tuple(name for name in REQUEST_INPUTS if name in FIELDS and FIELDS[name].kind != "image")
COMPARE_INPUTS = ("mode", "x_axis", "x_values", "y_axis", "y_values", "settings_a", "settings_b")
COMPARE_MODE_FIELDS = {"Grid": ("x_axis", "x_values", "y_axis", "y_values"), "A/B": ("settings_a", "settings_b"),
                       "Local vs Hosted": ()}
COMPARE_MODE_INPUTS = tuple(name for names in COMPARE_MODE_FIELDS.values() for name in names)
# Gradio's image box refuses a file whose type is not image/* in the browser itself, with a message that
# names no box, shown twice (two checks). Relabelled as an image, such a file reaches check_upload, which
# says once what is wrong with it and which box it was dropped on. Runs on page load (launch(js=...)).
UPLOAD_JS = """() => {
  const boxes = "#image, #ref_image, #mask";
  const relabelled = (files) => {
    const transfer = new DataTransfer();
    for (const file of files) {
      transfer.items.add(file.type.startsWith("image/") ? file
                         : new File([file], file.name, {type: "image/x-unchecked"}));
    }
    return transfer;
  };
  const unchecked = (files) => [...files].some((file) => !file.type.startsWith("image/"));
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (input instanceof HTMLInputElement && input.type === "file" && input.closest(boxes)
        && unchecked(input.files)) {
      input.files = relabelled(input.files).files;
    }
  }, true);
  document.addEventListener("drop", (event) => {
    const box = event.target instanceof Element ? event.target.closest(boxes) : null;
    if (!box || !event.dataTransfer || !unchecked(event.dataTransfer.files)) return;
    event.stopImmediatePropagation();
    event.preventDefault();
    event.target.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true,
                                                      dataTransfer: relabelled(event.dataTransfer.files)}));
  }, true);
}"""
# Choices that belong to this machine or person, not to a kind of product: a preset never changes them
# (a preset naming a mask model this machine lacks would break the next Generate).
MACHINE_SETTINGS = ("mask_model",)
# What each input is called on the screen. The widgets take their labels from here, and a message about a
# field names it the same way ("Product photo (image): ..."), with the API's name in brackets.
LABELS = {
    "image": "Product photo", "ref_image": "Reference setting", "prompt": "Prompt",
    "negative_prompt": "Negative prompt", "samples": "Images", "scheduler": "Scheduler",
    "num_inference_steps": "Steps", "guidance_scale": "Guidance scale", "seed": "Seed (-1 = random)",
    "strength": "Strength", "cn_weight": "ControlNet weight", "ip_adapter_weight": "Reference weight",
    "mask": "Your own mask (white = product)", "mask_model": "Mask model", "mask_grow": "Grow mask (px)",
    "mask_feather": "Feather (px)", "canny_low": "Canny low", "canny_high": "Canny high",
    "resolution": "Generation size (0 = the model's own)", "output_size": "Return at", "output_format": "Format",
    "backend": "Backend", "api_key": "Hosted API key", "preset": "Preset",
    "preset_name": "Name for a new preset (made of the current settings)",
    "settings": "Settings file (drop a Backdrop result to load its settings)",
    "mode": "Compare", "x_axis": "X axis", "y_axis": "Y axis", "axis values": "X and Y values",
    "settings_a": "A/B: settings A (JSON changes)", "settings_b": "A/B: settings B (JSON changes)",
}

_cancelled_sessions: set[str] = set()
_cancel_lock = threading.Lock()


def api_function(handler: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """``handler(values: dict, request, progress)`` as a function whose parameters are ``names``.

    Gradio names an event's API parameters after its function's signature, so /generate and /compare
    take the request's own field names without each spelling out two dozen parameters.
    """

    def call(*args: Any) -> Any:
        values = dict(zip(names, args))
        return handler(values, request=args[len(names)], progress=args[len(names) + 1])

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(name, kind, default=FIELDS[name].current_default() if name in FIELDS else None)
              for name in names]
    params += [inspect.Parameter("request", kind, default=None, annotation=gr.Request),
               inspect.Parameter("progress", kind, default=gr.Progress())]
    call.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    call.__annotations__ = {"request": gr.Request}  # Gradio injects the request by annotation
    call.__name__ = handler.__name__
    return call


def short_label(name: str) -> str:
    """A field's on-screen label without its hint in brackets: "Seed" for "Seed (-1 = random)"."""
    return LABELS[name].split(" (")[0]


def on_screen(error: BackdropError) -> str:
    """The error's message naming its field as the screen does: "Product photo (image): the file is empty"."""
    if error.field not in LABELS:
        return str(error)
    return f"{short_label(error.field)} ({error.field}): {error.detail}"


def _user_errors(action: str, outputs: int = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn every failure into a ``gr.Error`` with a sentence for the person; never a stack trace. A
    cancelled run is no failure: it leaves the ``outputs`` panels as they were (``cancel`` says so)."""

    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)  # keeps the signature Gradio names API parameters after
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except GenerationCancelled:
                # Not a failure: the panels keep what they showed, and no red "Error" badge appears. The
                # Cancel button's own event has said "Cancelled" already: a second toast here would repeat it.
                return tuple(gr.skip() for _ in range(outputs)) if outputs > 1 else gr.skip()
            except BackdropError as error:
                raise gr.Error(on_screen(error), title=f"Cannot {action}") from None
            except gr.Error:
                raise
            except Exception as error:  # the log has the trace; the browser gets a sentence
                log.exception("%s failed", action)
                raise gr.Error(f"Something went wrong ({type(error).__name__}); the server log has the details.") from None

        return guarded

    return wrap


# ZeroGPU's time budget for one request. No figure here is measured on ZeroGPU yet: all are estimates, to be
# replaced by benchmarks/gpu.py's seconds per image on its H200 slice.
_SECONDS_PER_PASS = 0.15  # estimate: one UNet + ControlNet pass, one image, SDXL at 1024², fp16 (two with CFG)
_SECONDS_TO_START = 10.0  # estimate: some 11 GB of fp16 weights moved in, encoders, VAE, compositing
_MAX_GPU_SECONDS = 300  # the most a ZeroGPU call is given


def _gpu_seconds(request: BgReplaceRequest, *args: Any, **kwargs: Any) -> int:
    """The budget for ``request``: UNet passes (per image; doubled by classifier-free guidance and by a
    second-order sampler, and in proportion to the pixels) plus the start. The models are loaded before the
    GPU is held (``generate_on_gpu``), so loading is not in it."""
    cfg = 2 if request.guidance_scale > 1 else 1
    order = 2 if request.scheduler in SECOND_ORDER else 1
    steps = max(1, int(request.num_inference_steps * request.strength))
    pixels = (request.resolution or 1024) ** 2 / 1024**2
    seconds = _SECONDS_TO_START + _SECONDS_PER_PASS * request.samples * steps * cfg * order * pixels
    return int(min(_MAX_GPU_SECONDS, seconds + 0.999))


def _on_zero_gpu() -> bool:
    """A ZeroGPU Space: the ``spaces`` package is there and the Space says so (it sets SPACES_ZERO_GPU)."""
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def _generate_plain(request: BgReplaceRequest, model_set: str) -> Any:
    """Generation with plain data in and out. ZeroGPU runs this in a forked worker and pickles what crosses:
    the request (settings and images), the model set's name and the result, never a callback."""
    from pipeline import generate

    return generate(request, model_set=model_set)


def _gpu_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """On a ZeroGPU Space, ``function`` holding a GPU only while it runs, for about as long as the request
    needs; anywhere else, ``function`` itself."""
    if not _on_zero_gpu():
        return function
    import spaces

    return spaces.GPU(duration=_gpu_seconds)(function)


_generate_in_gpu_worker = _gpu_function(_generate_plain)


def generate_on_gpu(request: BgReplaceRequest, model_set: str, **hooks: Any) -> Any:
    """Local generation. Anywhere but ZeroGPU: here, with progress, cancel and reuse (``hooks``). On ZeroGPU
    the models load first, in this process and outside the GPU budget (ZeroGPU keeps weights placed on CUDA
    outside a GPU function ready on the CPU and moves them in when the GPU is granted), then the GPU worker
    takes plain data; a callback cannot cross into it, so there the progress bar shows the stages only."""
    from pipeline import generate
    from pipeline.backends.local.models import load_models

    if _generate_in_gpu_worker is _generate_plain:
        return generate(request, model_set=model_set, **hooks)
    report = hooks.get("on_progress") or (lambda progress: None)
    report(Progress("load", 0.0, "Loading models (the first run downloads them)"))
    load_models(model_set)
    report(Progress("denoise", 0.0, "Generating on ZeroGPU"))
    result = _generate_in_gpu_worker(request, model_set)
    report(Progress("compose", 1.0, "Done"))
    return result


class Studio:
    """The UI's state that outlives one event: which models to run and where results go."""

    def __init__(self, model_set: str, output_dir: Path) -> None:
        self.model_set = model_set
        self.output_dir = output_dir
        self.only_this_machine = False  # launch_studio: True when it listens on loopback only, without --share

    @_user_errors("generate", outputs=4)
    def generate(self, values: dict[str, Any], *, request: gr.Request | None, progress: Any) -> tuple:
        """Gallery (saved files with seeds), before/after pair, intermediates, run summary."""
        from pipeline.workflows.outputs import save_result

        built = build_request(values)
        runner = self._runner(values, _session(request), progress)
        with self._device_line(values, progress):
            result = runner(built)
        paths = save_result(result, self.output_dir, stem=output_stem(values["image"]))  # saved before shown
        gallery = [(str(path), f"seed {seed}") for path, seed in zip(paths, result.seeds)]
        before = built.image.convert("RGB").resize(result.images[0].size)
        parts = result.intermediates
        intermediates = [(parts.subject_alpha, "subject mask"), (parts.inpaint_mask, "inpaint mask (white = new)"),
                         (parts.canny, "canny edges")] if parts else []
        return gallery, (before, result.images[0]), intermediates, _summary(result, paths)

    @_user_errors("compare", outputs=3)
    def compare(self, values: dict[str, Any], *, request: gr.Request | None, progress: Any) -> tuple:
        """Labelled grid image, every cell (saved files, labelled), summary."""
        from pipeline.workflows import sweep
        from pipeline.workflows.outputs import save_result, write_atomically

        base = build_request(values)
        hooks = {"on_progress": self._progress(progress), "should_cancel": self._cancel_check(_session(request))}
        local = self._runner(values, None, None, backend=BACKENDS[0])
        mode = values["mode"]
        if mode == "Grid":
            # An empty Y values box means no Y axis, as choosing "none" does.
            y_axis = None if values["y_axis"] in (None, "", "none") or not (values["y_values"] or "").strip() \
                else values["y_axis"]
            with self._device_line(values):
                comparison = sweep.run_grid(
                    base, self._runner(values, None, None), values["x_axis"],
                    sweep.parse_axis_values(values["x_axis"], values["x_values"] or ""), y_axis,
                    sweep.parse_axis_values(y_axis, values["y_values"] or "") if y_axis else None, **hooks)
        elif mode == "A/B":
            columns = {"A": (_overrides(base, values["settings_a"], "settings_a"), local),
                       "B": (_overrides(base, values["settings_b"], "settings_b"), local)}
            with gpu_queue.slot():
                comparison = sweep.run_columns(base, columns, "settings", **hooks)
        elif mode == "Local vs Hosted":
            hosted = self._runner(values, None, None, backend=BACKENDS[1])
            with gpu_queue.slot():
                comparison = sweep.run_columns(base, {"local": (base, local), "hosted": (base, hosted)}, "backend",
                                               **hooks)
        else:
            raise BackdropError(f"{mode!r} is unknown; expected one of {', '.join(COMPARE_MODES)}", field="mode")
        folder = _new_folder(self.output_dir, time.strftime("compare-%Y%m%d-%H%M%S"))
        grid_path = folder / "grid.png"
        write_atomically(grid_path, _png(comparison.grid))
        cells = []
        for index, cell in enumerate(comparison.cells):
            (path,) = save_result(cell.result, folder, stem=f"cell{index + 1:02d}")
            cells.append((str(path), cell.label))
        summary = (f"**{len(cells)} cells** in {comparison.seconds:.1f} s · seed {comparison.cells[0].result.seeds[0]}"
                   f" · computed once and reused: {_reuse_text(comparison.reuse_counts)}\n\n**Saved** `{folder}`")
        return str(grid_path), cells, summary

    def _runner(self, values: dict[str, Any], session: str | None, progress: Any,
                backend: str | None = None) -> Callable[..., Any]:
        from pipeline import generate

        hooks: dict[str, Any] = {}
        if progress is not None:
            hooks = {"on_progress": self._progress(progress), "should_cancel": self._cancel_check(session)}
        if (backend or values.get("backend")) == BACKENDS[1]:
            key = self._hosted_key(values)
            return lambda built, **more: generate(built, backend="hosted", api_key=key, **(hooks | more))
        return lambda built, **more: generate_on_gpu(built, self.model_set, **(hooks | more))

    def _hosted_key(self, values: dict[str, Any]) -> str | None:
        """The visitor's own key; the server's SEGMIND_API_KEY (None here) only where the operator lends it."""
        key = (values.get("api_key") or "").strip()
        if key or lends_server_key(self.only_this_machine):
            return key or None
        raise BackdropError("enter your own hosted API key: this studio does not lend its server's SEGMIND_API_KEY "
                            "to visitors (its operator can, with BACKDROP_STUDIO_SERVER_KEY=1)", field="api_key")

    @staticmethod
    def _device_line(values: dict[str, Any], progress: Any = None) -> Any:
        """Local work waits in the same line as REST requests, and says so while it waits; hosted work skips it."""
        from contextlib import nullcontext

        if values.get("backend") == BACKENDS[1]:
            return nullcontext()
        line = gpu_queue.stats()
        if progress is not None and line["running"]:
            ahead = line["running"] + line["waiting"]
            progress(0.0, desc=f"Waiting for the GPU: {ahead} generation(s) ahead (from this studio or the REST endpoint)")
        return gpu_queue.slot()

    @staticmethod
    def _progress(progress: Any) -> Callable[[Progress], None]:
        def on_progress(event: Progress) -> None:
            start, span = _STAGES.get(event.stage, (0.0, 1.0))
            progress(min(1.0, start + span * event.fraction), desc=event.message)

        return on_progress

    @staticmethod
    def _cancel_check(session: str | None) -> Callable[[], bool]:
        with _cancel_lock:
            _cancelled_sessions.discard(session or "api")

        def should_cancel() -> bool:
            with _cancel_lock:
                return (session or "api") in _cancelled_sessions

        return should_cancel


def lends_server_key(only_this_machine: bool) -> bool:
    """BACKDROP_STUDIO_SERVER_KEY=1 lends the server's hosted key to every visitor, 0 to none; unset, only
    a studio that nobody else can reach (loopback, no share link) uses it: there the visitor is the operator."""
    lend = setting("BACKDROP_STUDIO_SERVER_KEY")
    return only_this_machine if lend is None else lend


def _new_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name-2``, ``name-3``... if a comparison in the same second took it."""
    folder, number = parent / name, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            number += 1
            folder = parent / f"{name}-{number}"


def output_stem(upload: str) -> str:
    """``perfume-20261129-101500``: the product photo's own name (Gradio keeps an upload's file name) and
    the time, so a folder of results still says which product each one shows."""
    product = re.sub(r"[^\w.-]+", "-", Path(upload).stem).strip("-.")[:80] or "backdrop"
    return f"{product}-{time.strftime('%Y%m%d-%H%M%S')}"


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "api"


def build_request(values: dict[str, Any]) -> BgReplaceRequest:
    """A request from the studio's inputs: uploads are file paths, read by our own decoder (EXIF,
    transparency, clear errors)."""
    if not values.get("image"):
        raise BackdropError("upload a product photo", field="image")
    if not values.get("ref_image"):
        raise BackdropError("upload a reference picture of the setting", field="ref_image")
    fields = {name: value for name, value in values.items() if name in FIELDS}
    for name in ("image", "ref_image", "mask"):
        if fields.get(name):
            fields[name] = Path(fields[name])
    fields["resolution"] = fields.get("resolution") or None
    return BgReplaceRequest.from_dict(fields)


def _overrides(base: BgReplaceRequest, text: str | None, field: str) -> BgReplaceRequest:
    from pipeline.contract.request import loads_json

    try:
        changes = loads_json(text or "{}", field=field)
    except ValueError as exc:
        raise BackdropError(f"not valid JSON ({exc}); write e.g. {{\"cn_weight\": 0.5}}", field=field) from None
    if not isinstance(changes, dict):
        raise BackdropError('must be a JSON object, e.g. {"cn_weight": 0.5}', field=field)
    unknown = sorted(set(changes) - set(SETTING_INPUTS))
    if unknown:
        raise BackdropError(f"unknown setting {unknown[0]!r}; allowed: {', '.join(SETTING_INPUTS)}", field=field)
    return base.replace(**changes)


def _png(image: Any) -> bytes:
    from pipeline.contract.images import encode_image

    return encode_image(image, "png")


def _reuse_text(counts: dict[str, int]) -> str:
    names = {"prepare": "mask + canny", "prompt": "prompt embeddings", "image_embeds": "reference embeddings"}
    return ", ".join(f"{names[key]} ×{count}" for key, count in counts.items())


def _summary(result: Any, paths: list[Path]) -> str:
    info = result.info
    timings = " · ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.timings.items())
    rows = [f"**Seeds** {', '.join(map(str, result.seeds))}", f"**Time** {timings}"]
    if result.backend == "hosted":
        credits = info.get("remaining_credits")
        rows.append(f"**Hosted API** `{info['url']}` · {info['calls']} call(s), {info['attempts']} attempt(s) · "
                    f"credits left: {'unknown' if credits is None else f'{credits:g}'}")
    else:
        rows.append(f"**Device** {info['device']} ({info['dtype']}, memory mode {info['memory_mode']})")
        rows.append("**Models** " + ", ".join(f"{part}: `{model}`" for part, model in info["models"].items()))
    rows.append(f"**Sizes** generated {'x'.join(map(str, info['generation_size']))}, "
                f"returned {'x'.join(map(str, info['output_size']))} · mask from {info['mask_source']}")
    rows.append("**Saved** " + ", ".join(f"`{path}`" for path in paths))
    return "\n\n".join(rows)


def _compare_mode_fields(mode: str) -> list[Any]:
    """Show only the Compare inputs the chosen mode uses."""
    shown = COMPARE_MODE_FIELDS.get(mode, ())
    return [gr.update(visible=name in shown) for name in COMPARE_MODE_INPUTS]


def check_upload(field: str, path: str | None) -> Any:
    """Check an upload as it arrives: a file that is no usable image is reported now, once, naming the box,
    and the box is emptied, instead of Generate refusing it later."""
    from pipeline.contract.images import load_image

    if not path:
        return gr.skip()
    try:
        load_image(Path(path), field=field)
    except BackdropError as error:
        gr.Warning(on_screen(error))
        return None
    return gr.skip()


def _scheduler_note(name: str) -> str:
    return "Second-order sampler: about two UNet passes per step, so twice the time of Euler." if name in SECOND_ORDER else ""


def cancel(request: gr.Request = None) -> None:
    with _cancel_lock:
        _cancelled_sessions.add(_session(request))
    gr.Info("Cancelled: the run stops after the step it is on, and nothing of it is saved.")


@_user_errors("load the settings")
def load_settings(file: str | None) -> list[Any]:
    """Every setting stored in a Backdrop result (PNG text chunk, JPEG comment or .json sidecar)."""
    from pipeline.workflows.metadata import read_metadata, settings_from_metadata

    if not file:
        raise BackdropError("drop a result image (or its .json sidecar) first", field="settings")
    settings = settings_from_metadata(read_metadata(Path(file)))
    values = {name: settings.get(name, FIELDS[name].current_default()) for name in SETTING_INPUTS}
    gr.Info(loaded_summary(Path(file).name, values))
    return [_on_screen_value(name, value) for name, value in values.items()]


def loaded_summary(source: str, values: dict[str, Any]) -> str:
    """What Load settings restored, in a line: the seed, the prompt and every setting off its default."""
    changed = [f"{short_label(name)} {value}" for name, value in values.items()
               if name not in ("prompt", "negative_prompt", "seed") and value != FIELDS[name].current_default()]
    prompt = values.get("prompt") or ""
    return (f"Settings loaded from {source}: seed {values.get('seed')}, prompt \"{prompt[:60]}{'…' if len(prompt) > 60 else ''}\"; "
            + (f"changed from the defaults: {', '.join(changed)}." if changed else "every other setting at its default."))


def _on_screen_value(name: str, value: Any) -> Any:
    """A setting as its widget shows it: "the model's own" generation size is 0 in its box."""
    return 0 if name == "resolution" and value is None else value


@_user_errors("apply the preset")
def apply_preset(slug: str, ref_image: str | None) -> list[Any]:
    """The preset's settings over the defaults; its reference picture only if none is uploaded."""
    from pipeline.workflows.presets import get_preset

    preset = get_preset(slug)
    values = []
    for name in SETTING_INPUTS:
        if name in MACHINE_SETTINGS:
            values.append(gr.skip())
        elif name in preset.settings:
            values.append(_on_screen_value(name, preset.settings[name]))
        elif name in ("prompt", "negative_prompt", "seed"):
            values.append(gr.skip())  # the user's own words and seed stay unless the preset sets them
        else:
            values.append(_on_screen_value(name, FIELDS[name].default))
    reference = ref_image or (str(preset.reference) if preset.reference else None)
    return [*values, reference, preset.description]


@_user_errors("save the preset")
def save_preset(name: str, *values: Any) -> Any:
    from pipeline.workflows.presets import list_presets, save_user_preset

    settings = {key: value for key, value in zip(SETTING_INPUTS, values)
                if key not in ("prompt", "seed", *MACHINE_SETTINGS)}
    settings["resolution"] = settings.get("resolution") or None
    path = save_user_preset(name or "", settings)
    gr.Info(f"Saved preset to {path}")
    return gr.update(choices=list(list_presets()), value=path.stem)


@_user_errors("write the API request")
def copy_as_request(target: str, *values: Any) -> str:
    """The JSON body and a curl command for the current settings; the key is never filled in."""
    settings = dict(zip(SETTING_INPUTS, values))
    settings["resolution"] = settings.get("resolution") or None
    hosted = target == BACKENDS[1]
    url = setting("SEGMIND_API_URL") if hosted else f"http://127.0.0.1:{setting('BACKDROP_PORT') or 7860}/v1/bg-replace"
    return curl_example(settings, url, hosted=hosted)


def find_product_early(image: str | None, mask: str | None, mask_model: str | None) -> None:
    """Run the mask model on a product photo as soon as it arrives (or another mask model is chosen),
    while the photographer writes the prompt: Generate then finds the mask remembered and skips the mask
    network (u2netp ~0.3 s on a CPU, BiRefNet seconds). Quiet: problems are for Generate to report."""
    from pipeline.stages.masking import find_product_ahead

    if image and mask_model and not mask:
        find_product_ahead(Path(image), mask_model)


def build_demo(model_set: str | None = None, output_dir: Path | str | None = None) -> gr.Blocks:
    """The studio's Blocks. Building it loads no model."""
    from pipeline.backends.local.models import no_gpu_warning
    from pipeline.workflows.presets import list_presets
    from pipeline.workflows.sweep import SWEEP_AXES

    studio = Studio(model_set or default_model_set(),
                    Path(output_dir or setting("BACKDROP_OUTPUT_DIR")))
    presets = list_presets()
    inputs: dict[str, Any] = {}
    with gr.Blocks(title="Backdrop") as demo:
        gr.Markdown("# Backdrop\nNew backgrounds for product photos. The product's own pixels are never repainted.")
        if no_gpu := no_gpu_warning(studio.model_set):  # before any download: say what the first Generate costs
            gr.Markdown(f"**{no_gpu}**", elem_id="no_gpu_note")
        with gr.Row():
            with gr.Column(scale=1):
                _input_panel(inputs, presets)
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Cancel", variant="secondary", elem_id="cancel")
                with gr.Accordion("Settings: load, save, share", open=False):
                    settings_file = gr.File(label=LABELS["settings"], elem_id="settings_file",
                                            file_types=["image", ".json"])
                    load = gr.Button("Load settings", elem_id="load_settings")
                    with gr.Row():
                        preset_name = gr.Textbox(label=LABELS["preset_name"],
                                                 elem_id="preset_name")
                        save = gr.Button("Save preset", elem_id="save_preset", scale=0)
                    with gr.Row():
                        request_target = gr.Radio(list(BACKENDS), value=BACKENDS[0], label="API request for",
                                                  elem_id="request_target")
                        copy = gr.Button("Copy as API request", elem_id="copy_request", scale=0)
                    request_text = gr.Code(label="API request (key left out)", language="shell",
                                           elem_id="request_text")
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Results"):
                        # "contain": a 3:2 or tall result is shown whole, not cropped to a square thumbnail.
                        gallery = gr.Gallery(label="Results", columns=2, elem_id="gallery", format="png",
                                             buttons=["download", "fullscreen"], object_fit="contain", height="auto")
                        slider = gr.ImageSlider(label="Before / after", type="pil", elem_id="slider")
                        with gr.Accordion("Intermediates", open=False):
                            intermediates = gr.Gallery(label="Subject mask, inpaint mask, canny map", columns=3,
                                                       elem_id="intermediates", format="png")
                        summary = gr.Markdown(elem_id="summary")
                    with gr.Tab("Compare", elem_id="compare_tab"):
                        compare_inputs = _compare_panel(SWEEP_AXES)
                        compare_run = gr.Button("Compare", variant="primary", elem_id="compare_run")
                        # No label badge on the grid: it would cover the axis names drawn in its corner.
                        grid = gr.Image(label="Grid", show_label=False, type="filepath", elem_id="compare_grid",
                                        interactive=False)
                        cells = gr.Gallery(label="Every cell", columns=3, elem_id="compare_cells", format="png",
                                           buttons=["download", "fullscreen"], object_fit="contain", height="auto")
                        compare_summary = gr.Markdown(elem_id="compare_summary")

        gr.Examples([[str(ASSETS / product), str(ASSETS / scene), text] for product, scene, text in EXAMPLES],
                    inputs=[inputs["image"], inputs["ref_image"], inputs["prompt"]], label="Examples")

        request_components = [inputs[name] for name in REQUEST_INPUTS]
        setting_components = [inputs[name] for name in SETTING_INPUTS]
        run.click(api_function(studio.generate, REQUEST_INPUTS), request_components,
                          [gallery, slider, intermediates, summary], api_name="generate",
                          concurrency_limit=1, concurrency_id="gpu")
        compare_run.click(
            api_function(studio.compare, REQUEST_INPUTS + COMPARE_INPUTS),
            request_components + [compare_inputs[name] for name in COMPARE_INPUTS],
            [grid, cells, compare_summary], api_name="compare", concurrency_limit=1, concurrency_id="gpu")
        # Events that say something (gr.Info, gr.Warning) are queued: Gradio delivers those toasts only from
        # queued events; from the others they go to the server's log. None of them waits behind the GPU.
        toasts = {"queue": True, "concurrency_limit": None}
        # Cancel is cooperative: the run stops after its current step and returns its panels unchanged. Gradio's
        # own ``cancels=`` would kill the event's task instead, and the browser then showed an "Error" badge on
        # the results in some runs (a race with the task's end).
        stop.click(cancel, None, None, api_name="cancel", **toasts)
        inputs["backend"].change(lambda backend: gr.update(visible=backend == BACKENDS[1]), inputs["backend"],
                                 inputs["api_key"], api_visibility="private", queue=False, show_progress="hidden")
        compare_inputs["mode"].change(_compare_mode_fields, compare_inputs["mode"],
                                      [compare_inputs[name] for name in COMPARE_MODE_INPUTS],
                                      api_visibility="private", queue=False, show_progress="hidden")
        for name in ("image", "ref_image", "mask"):
            inputs[name].upload(functools.partial(check_upload, name), inputs[name], inputs[name],
                                api_visibility="private", show_progress="hidden", **toasts)
        inputs["random_seed"].click(lambda: -1, None, inputs["seed"], api_name="random_seed", queue=False)
        inputs["scheduler"].change(_scheduler_note, inputs["scheduler"], inputs["scheduler_note"],
                                   api_name="scheduler_note", queue=False)
        inputs["preset"].change(apply_preset, [inputs["preset"], inputs["ref_image"]],
                                setting_components + [inputs["ref_image"], inputs["preset_note"]],
                                api_name="apply_preset", queue=False)
        load.click(load_settings, settings_file, setting_components, api_name="load_settings", **toasts)
        save.click(save_preset, [preset_name] + setting_components, inputs["preset"], api_name="save_preset",
                   **toasts)
        gr.on([inputs["image"].change, inputs["mask_model"].change], find_product_early,
              [inputs["image"], inputs["mask"], inputs["mask_model"]], None, api_visibility="private",
              show_progress="hidden", trigger_mode="always_last", concurrency_limit=1, concurrency_id="mask")
        copy.click(copy_as_request, [request_target] + setting_components, request_text, api_name="copy_request",
                   queue=False)
    demo.queue(max_size=QUEUE_SIZE)
    demo.studio = studio  # type: ignore[attr-defined]
    return demo


class ImageUpload(gr.Image):
    """``gr.Image`` that hands the uploaded file's path to Backdrop's own decoder instead of decoding it
    itself: an empty, truncated or oversized upload then gets Backdrop's message naming the field (not a
    bare "Error"), and EXIF, 16-bit and CMYK are handled in one place."""

    @classmethod
    def get_block_name(cls) -> str:
        return "image"  # the browser shows the ordinary image component

    def preprocess(self, payload: Any) -> str | None:
        return None if payload is None else payload.path


class FieldSlider(gr.Slider):
    """``gr.Slider`` that leaves range checks to the request type: a script sending 3.0 for ``cn_weight``
    then reads "cn_weight: 3.0 is out of range; expected a number from 0 to 1" instead of Gradio's "Value
    3.0 is greater than maximum value 1.0", which does not say which of the sliders it means."""

    @classmethod
    def get_block_name(cls) -> str:
        return "slider"  # the browser shows the ordinary slider

    def preprocess(self, payload: Any) -> Any:
        return payload


class FieldNumber(gr.Number):
    """``gr.Number`` that, like ``FieldSlider``, leaves range checks to the request type, and whose box never
    starts empty: an empty number box inside an accordion shows ``0`` in the browser once the accordion is
    opened, and then sends 0 (Gradio 6.31). So "the model's own size" is 0 on the screen, and the box's
    range is said in the message that names it, not by the browser's red outline."""

    @classmethod
    def get_block_name(cls) -> str:
        return "number"

    def preprocess(self, payload: Any) -> Any:
        return payload


def _slider(name: str) -> gr.Slider:
    spec = FIELDS[name]
    step = 1 if spec.kind == "int" else 0.05
    return FieldSlider(spec.minimum, spec.maximum, value=spec.default, step=step, label=LABELS[name], info=spec.help,
                       elem_id=name)


def _choice(name: str, **layout: Any) -> gr.Dropdown:
    spec = FIELDS[name]
    return gr.Dropdown(list(spec.choices), value=spec.current_default(), label=LABELS[name], info=spec.help,
                       elem_id=name, **layout)


def _input_panel(inputs: dict[str, Any], presets: dict[str, Any]) -> None:
    """The left column: images, prompt, preset and backend, then every setting. Fills ``inputs`` by name."""
    with gr.Row():
        inputs["image"] = ImageUpload(label=LABELS["image"], type="filepath", image_mode=None, elem_id="image",
                                      sources=["upload", "clipboard"])
        inputs["ref_image"] = ImageUpload(label=LABELS["ref_image"], type="filepath", image_mode=None,
                                          elem_id="ref_image", sources=["upload", "clipboard"])
    inputs["prompt"] = gr.Textbox(label=LABELS["prompt"], placeholder="perfume bottle on a mossy rock in a jungle", lines=2,
                                  elem_id="prompt")
    inputs["negative_prompt"] = gr.Textbox(label=LABELS["negative_prompt"], placeholder="blur, painting, low quality",
                                           elem_id="negative_prompt")
    with gr.Row():
        inputs["preset"] = gr.Dropdown([(preset.name, slug) for slug, preset in presets.items()],
                                       value="default" if "default" in presets else None, label=LABELS["preset"],
                                       elem_id="preset")
        inputs["backend"] = gr.Radio(list(BACKENDS), value=BACKENDS[0], label=LABELS["backend"], elem_id="backend")
        # Shown only with the Hosted API chosen (see build_demo): a key field beside Local GPU asks for nothing.
        inputs["api_key"] = gr.Textbox(label=LABELS["api_key"], type="password", elem_id="api_key",
                                       placeholder="your own key (the server's SEGMIND_API_KEY only where lent)", visible=False)
    inputs["preset_note"] = gr.Markdown(presets["default"].description if "default" in presets else "")
    with gr.Accordion("Product mask (optional)", open=False):
        inputs["mask"] = ImageUpload(label=LABELS["mask"], type="filepath", image_mode=None,
                                     elem_id="mask")
    with gr.Accordion("Advanced settings", open=False):
        with gr.Row():
            inputs["samples"] = _slider("samples")
            inputs["scheduler"] = _choice("scheduler")
        inputs["scheduler_note"] = gr.Markdown(_scheduler_note(FIELDS["scheduler"].default))
        with gr.Row():
            inputs["num_inference_steps"] = _slider("num_inference_steps")
            inputs["guidance_scale"] = _slider("guidance_scale")
        with gr.Row():
            inputs["seed"] = FieldNumber(value=FIELDS["seed"].default, precision=0, label=LABELS["seed"],
                                         elem_id="seed", info=FIELDS["seed"].help)
            inputs["random_seed"] = gr.Button("Random seed", elem_id="random_seed", scale=0)
        with gr.Row():
            inputs["strength"] = _slider("strength")
            inputs["cn_weight"] = _slider("cn_weight")
            inputs["ip_adapter_weight"] = _slider("ip_adapter_weight")
        with gr.Row():
            inputs["mask_model"] = _choice("mask_model", scale=2, min_width=240)  # room for the longest name
            inputs["mask_grow"] = _slider("mask_grow")
            inputs["mask_feather"] = _slider("mask_feather")
        with gr.Row():
            inputs["canny_low"] = _slider("canny_low")
            inputs["canny_high"] = _slider("canny_high")
        with gr.Row():
            inputs["resolution"] = FieldNumber(value=0, precision=0, label=LABELS["resolution"], elem_id="resolution",
                                               info=f"{FIELDS['resolution'].minimum}..{FIELDS['resolution'].maximum}:"
                                                    " generate at about this² pixels")
            inputs["output_size"] = gr.Radio(list(FIELDS["output_size"].choices), value=FIELDS["output_size"].default,
                                             label=LABELS["output_size"], elem_id="output_size")
            inputs["output_format"] = gr.Radio(list(FIELDS["output_format"].choices),
                                               value=FIELDS["output_format"].default, label=LABELS["output_format"],
                                               elem_id="output_format")


def _compare_panel(axes: tuple[str, ...]) -> dict[str, Any]:
    """The Compare tab's own inputs; the images, prompt and settings come from the left column."""
    panel: dict[str, Any] = {}
    panel["mode"] = gr.Radio(list(COMPARE_MODES), value="Grid", label=LABELS["mode"], elem_id="compare_mode")
    gr.Markdown("Every cell uses the same images and seed (a random seed is drawn once) and makes one image. "
                "Grid values: commas between numbers or names, `|` between prompts.")
    with gr.Row():
        panel["x_axis"] = gr.Dropdown(list(axes), value="cn_weight", label=LABELS["x_axis"], elem_id="x_axis")
        panel["x_values"] = gr.Textbox(value="0.5, 0.7, 0.9", label="X values", elem_id="x_values")
    with gr.Row():
        panel["y_axis"] = gr.Dropdown(["none", *axes], value="ip_adapter_weight", label=LABELS["y_axis"], elem_id="y_axis")
        panel["y_values"] = gr.Textbox(value="0.3, 0.6", label="Y values", elem_id="y_values")
    with gr.Row():  # shown in A/B mode only (build_demo)
        panel["settings_a"] = gr.Textbox(value='{"cn_weight": 0.9}', label=LABELS["settings_a"],
                                         elem_id="settings_a", visible=False)
        panel["settings_b"] = gr.Textbox(value='{"cn_weight": 0.6}', label=LABELS["settings_b"],
                                         elem_id="settings_b", visible=False)
    return panel


def guarded_app_kwargs() -> dict[str, Any]:
    """The server app's middleware that asks every door for a key when BACKDROP_API_KEYS is set."""
    from starlette.middleware import Middleware

    from pipeline.interfaces.access import KeyGuard

    return {"middleware": [Middleware(KeyGuard)]}


def launch_studio(
    *, host: str = "127.0.0.1", port: int = 7860, model_set: str | None = None, output_dir: Path | str = "outputs",
    share: bool = False, quiet: bool = False,
) -> gr.Blocks:
    """Start the studio and its REST endpoint (``/v1``) on one server without blocking; return the Blocks."""
    output_dir = Path(output_dir).resolve()
    demo = build_demo(model_set=model_set, output_dir=output_dir)
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(output_dir)],
                prevent_thread_lock=True, quiet=quiet, js=UPLOAD_JS, app_kwargs=guarded_app_kwargs())
    demo.studio.only_this_machine = host in LOOPBACK_HOSTS and not share
    mount_rest(demo.server_app, model_set=demo.studio.model_set, queue=gpu_queue, host=host)
    return demo


def main(argv: list[str] | None = None) -> None:
    try:
        check_settings()  # e.g. an unknown BACKDROP_MASK_MODEL or a bad BACKDROP_PORT stops start-up here, named
    except BackdropError as error:
        print(f"backdrop: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    parser = argparse.ArgumentParser(description="Backdrop studio")
    # Hugging Face Spaces (and Docker hosts) say where to listen through Gradio's own variables.
    parser.add_argument("--host", default=setting("BACKDROP_HOST") or os.environ.get("GRADIO_SERVER_NAME")
                        or "127.0.0.1")
    # A string default goes through type=int too: a bad GRADIO_SERVER_PORT is argparse's one-line error.
    parser.add_argument("--port", type=int, default=setting("BACKDROP_PORT")
                        or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    parser.add_argument("--model-set", choices=("sdxl", "tiny"), default=default_model_set())
    parser.add_argument("--output-dir", default=setting("BACKDROP_OUTPUT_DIR"))
    parser.add_argument("--share", action="store_true", help="Also serve on a public gradio.live link.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, not ours
    from pipeline.backends.local.models import no_gpu_warning

    if no_gpu := no_gpu_warning(args.model_set):
        log.warning(no_gpu)
    os.environ["BACKDROP_PORT"] = str(args.port)  # for the studio's "Copy as API request"
    # Gradio's own banner would advise `share=True in launch()`; this says it the way this command takes it.
    demo = launch_studio(host=args.host, port=args.port, model_set=args.model_set, output_dir=args.output_dir,
                         share=args.share, quiet=not args.share)
    print(f"Backdrop studio: http://{args.host}:{args.port}/" + ("" if args.share else " (--share adds a public link)"),
          flush=True)
    print(f"REST endpoint: POST http://{args.host}:{args.port}/v1/bg-replace (docs at /v1/docs)", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
