"""The studio's event functions: what Generate, Compare, Cancel, presets, settings and uploads do.

Each turns every failure into a ``gr.Error`` with a sentence for the person, naming the field as the
screen does; app.py wires them to its widgets.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline.contract.errors import BackdropError, GenerationCancelled
from pipeline.contract.request import FIELDS, BgReplaceRequest
from pipeline.contract.settings import setting
from pipeline.interfaces.rest import curl_example
from pipeline.interfaces.studio.cancel import CANCELS, caller_key
from pipeline.interfaces.studio.screen import (
    BACKENDS,
    COMPARE_MODE_FIELDS,
    COMPARE_MODE_INPUTS,
    COMPARE_MODES,
    MACHINE_SETTINGS,
    SETTING_INPUTS,
    from_screen,
    on_screen,
    on_screen_value,
    settings_on_screen,
)
from pipeline.interfaces.studio.text import compare_summary, loaded_summary, progress_reporter, run_summary
from pipeline.interfaces.studio.values import build_request, new_folder, output_stem, overrides
from pipeline.interfaces.studio.zero_gpu import generate_on_gpu
from pipeline.stages.framing import enlargement_warning
from pipeline.workflows.queue import gpu_queue

log = logging.getLogger("backdrop.app")


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


def user_errors(action: str, outputs: int = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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
                raise gr.Error(f"Something went wrong ({type(error).__name__}); "
                               "the server log has the details.") from None

        return guarded

    return wrap


class Studio:
    """The UI's state that outlives one event: which models to run and where results go."""

    def __init__(self, model_set: str, output_dir: Path) -> None:
        self.model_set = model_set
        self.output_dir = output_dir
        self.only_this_machine = False  # launch_studio: True when it listens on loopback only, without --share

    @user_errors("generate", outputs=4)
    def generate(self, values: dict[str, Any], *, request: gr.Request | None, progress: Any) -> tuple:
        """Gallery (saved files with seeds), before/after pair, intermediates, run summary."""
        from pipeline.workflows.outputs import save_result

        built = build_request(values)
        with CANCELS.run(caller_key(request)) as should_cancel:
            hooks = {} if progress is None else {"on_progress": progress_reporter(progress),
                                                 "should_cancel": should_cancel}
            runner = self._runner(values, hooks)
            with self._device_line(values, progress):
                result = runner(built)
        paths = save_result(result, self.output_dir, stem=output_stem(values["image"]))  # saved before shown
        if warning := enlargement_warning(result.info):
            gr.Warning(warning)
        gallery = [(str(path), f"seed {seed}") for path, seed in zip(paths, result.seeds)]
        before = built.image.convert("RGB").resize(result.images[0].size)
        gallery = [(path, f"{caption} · review" if verdict == "review" else caption)
                   for (path, caption), verdict in zip(gallery, verdicts(result))]
        parts = result.intermediates
        intermediates = [(parts.subject_alpha, "subject mask"), (parts.inpaint_mask, "inpaint mask (white = new)"),
                         (parts.canny, "canny edges")] if parts else []
        intermediates += [(layer, f"shadow and reflection, seed {seed}")
                          for layer, seed in zip(parts.grounding if parts else (), result.seeds)]
        return gallery, (before, result.images[0]), intermediates, run_summary(result, paths)

    @user_errors("compare", outputs=3)
    def compare(self, values: dict[str, Any], *, request: gr.Request | None, progress: Any) -> tuple:
        """Labelled grid image, every cell (saved files, labelled), summary."""
        from pipeline.contract.images import encode_image
        from pipeline.workflows.outputs import save_result, write_atomically

        base = build_request(values)
        with CANCELS.run(caller_key(request)) as should_cancel:
            hooks = {"on_progress": progress_reporter(progress), "should_cancel": should_cancel}
            comparison = self._comparison(values, base, hooks)
        folder = new_folder(self.output_dir, time.strftime("compare-%Y%m%d-%H%M%S"))
        grid_path = folder / "grid.png"
        write_atomically(grid_path, encode_image(comparison.grid, "png"))
        cells = []
        for index, cell in enumerate(comparison.cells):
            (path,) = save_result(cell.result, folder, stem=f"cell{index + 1:02d}")
            cells.append((str(path), cell.label))
        return str(grid_path), cells, compare_summary(comparison, len(cells), folder)

    def _comparison(self, values: dict[str, Any], base: BgReplaceRequest, hooks: dict[str, Any]) -> Any:
        """The chosen mode's cells, run in the GPU line (hosted cells too, beside local ones)."""
        from pipeline.workflows import sweep

        local = self._runner(values, {}, backend=BACKENDS[0])
        mode = values["mode"]
        if mode == "Grid":
            # An empty Y values box means no Y axis, as choosing "none" does.
            y_axis = None if values["y_axis"] in (None, "", "none") or not (values["y_values"] or "").strip() \
                else values["y_axis"]
            with self._device_line(values):
                return sweep.run_grid(
                    base, self._runner(values, {}), values["x_axis"],
                    sweep.parse_axis_values(values["x_axis"], values["x_values"] or ""), y_axis,
                    sweep.parse_axis_values(y_axis, values["y_values"] or "") if y_axis else None, **hooks)
        if mode == "A/B":
            columns = {"A": (overrides(base, values["settings_a"], "settings_a"), local),
                       "B": (overrides(base, values["settings_b"], "settings_b"), local)}
            with gpu_queue.slot():
                return sweep.run_columns(base, columns, "settings", **hooks)
        if mode == "Local vs Hosted":
            hosted = self._runner(values, {}, backend=BACKENDS[1])
            with gpu_queue.slot():
                return sweep.run_columns(base, {"local": (base, local), "hosted": (base, hosted)}, "backend", **hooks)
        raise BackdropError(f"{mode!r} is unknown; expected one of {', '.join(COMPARE_MODES)}", field="mode")

    def _runner(self, values: dict[str, Any], hooks: dict[str, Any], backend: str | None = None) -> Callable[..., Any]:
        """A ``generate``-like function on the chosen backend with ``hooks`` (progress, cancel) built in."""
        from pipeline.backends import generate

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
        if values.get("backend") == BACKENDS[1]:
            return contextlib.nullcontext()
        line = gpu_queue.stats()
        if progress is not None and line["running"]:
            ahead = line["running"] + line["waiting"]
            progress(0.0, desc=f"Waiting for the GPU: {ahead} generation(s) ahead "
                               "(from this studio or the REST endpoint)")
        return gpu_queue.slot()


def lends_server_key(only_this_machine: bool) -> bool:
    """BACKDROP_STUDIO_SERVER_KEY=1 lends the server's hosted key to every visitor, 0 to none; unset, only
    a studio that nobody else can reach (loopback, no share link) uses it: there the visitor is the operator."""
    lend = setting("BACKDROP_STUDIO_SERVER_KEY")
    return only_this_machine if lend is None else lend


def cancel(request: gr.Request = None) -> None:
    """Cancel: the caller's own runs in progress stop after the step they are on; nobody else's."""
    CANCELS.cancel(caller_key(request))
    gr.Info("Cancelled: the run stops after the step it is on, and nothing of it is saved.")


def compare_mode_fields(mode: str) -> list[Any]:
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


@user_errors("load the settings")
def load_settings(file: str | None) -> list[Any]:
    """Every setting stored in a Backdrop result (PNG text chunk, JPEG comment or .json sidecar)."""
    from pipeline.workflows.metadata import read_metadata, settings_from_metadata

    if not file:
        raise BackdropError("drop a result image (or its .json sidecar) first", field="settings")
    settings = settings_from_metadata(read_metadata(Path(file)))
    values = {name: settings.get(name, FIELDS[name].current_default()) for name in SETTING_INPUTS}
    gr.Info(loaded_summary(Path(file).name, values))
    return settings_on_screen(values)


@user_errors("apply the preset")
def apply_preset(slug: str, ref_image: str | None) -> list[Any]:
    """The preset's settings over the defaults; its reference picture only if none is uploaded."""
    from pipeline.workflows.presets import get_preset

    preset = get_preset(slug)
    shadow = preset.settings.get("shadow", FIELDS["shadow"].default)
    values = []
    for name in SETTING_INPUTS:
        if name in MACHINE_SETTINGS:
            values.append(gr.skip())
        elif name in preset.settings:
            values.append(on_screen_value(name, preset.settings[name], shadow))
        elif name in ("prompt", "negative_prompt", "seed"):
            values.append(gr.skip())  # the user's own words and seed stay unless the preset sets them
        else:
            values.append(on_screen_value(name, FIELDS[name].default, shadow))
    reference = ref_image or (str(preset.reference) if preset.reference else None)
    return [*values, reference, preset.description]


@user_errors("save the preset")
def save_preset(name: str, *values: Any) -> Any:
    """The current settings (not the prompt, seed or this machine's choices) as a preset of the user's own."""
    from pipeline.workflows.presets import list_presets, save_user_preset

    settings = from_screen({key: value for key, value in zip(SETTING_INPUTS, values)
                            if key not in ("prompt", "seed", *MACHINE_SETTINGS)})
    path = save_user_preset(name or "", settings)
    gr.Info(f"Saved preset to {path}")
    return gr.update(choices=list(list_presets()), value=path.stem)


@user_errors("write the API request")
def copy_as_request(target: str, *values: Any) -> str:
    """The JSON body and a curl command for the current settings; the key is never filled in."""
    settings = from_screen(dict(zip(SETTING_INPUTS, values)))
    hosted = target == BACKENDS[1]
    url = setting("SEGMIND_API_URL") if hosted else f"http://127.0.0.1:{setting('BACKDROP_PORT') or 7860}/v1/bg-replace"
    return curl_example(settings, url, hosted=hosted)


def verdicts(result: Any) -> list[str]:
    """Each image's quality verdict (``ok`` where none was recorded)."""
    quality = result.info.get("quality") or [{}] * len(result.images)
    return [(entry or {}).get("verdict", "ok") for entry in quality]


def preview_framing(image: str | None, mask: str | None, mask_model: str | None, canvas: str, padding: float,
                    placement: str) -> Any:
    """The Framing panel's preview: the product on the canvas, the padded box drawn; nothing without a canvas
    (the photo keeps its own framing). A value being typed that is not valid yet says why, once, quietly."""
    from pipeline.stages.framing import framing_preview

    if not image or not canvas or canvas.strip().lower() == "input":
        return None
    given = {"image": Path(image), "mask": Path(mask) if mask else None, "mask_model": mask_model,
             "canvas": canvas, "padding": padding, "placement": placement}
    try:  # each field checked as a request checks it; the photo decoded once
        fields = {name: FIELDS[name].coerce(value) for name, value in given.items()}
        return framing_preview(**fields)
    except BackdropError as error:
        gr.Warning(on_screen(error))
        return None


def find_product_early(image: str | None, mask: str | None, mask_model: str | None) -> None:
    """Run the mask model on a product photo as soon as it arrives (or another mask model is chosen),
    while the photographer writes the prompt: Generate then finds the mask remembered and skips the mask
    network (u2netp ~0.3 s on a CPU, BiRefNet seconds). Quiet: problems are for Generate to report."""
    from pipeline.stages.masking import find_product_ahead

    if image and mask_model and not mask:
        find_product_ahead(Path(image), mask_model)
