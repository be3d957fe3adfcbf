"""Backdrop studio: the browser UI over the ``pipeline`` library, as layout and event wiring. What the
events do, the labels, the widgets made from the request's fields and the start-up live in
``pipeline/interfaces/studio/``. Loads no model until the first Generate.

    python app.py [--host 127.0.0.1] [--port 7860] [--model-set sdxl|tiny] [--share]
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline.backends.local.models import default_model_set
from pipeline.contract.request import FIELDS
from pipeline.contract.settings import setting

# The studio's package before Gradio: importing it sets Gradio's environment (no telemetry).
from pipeline.interfaces.studio import launch, widgets
from pipeline.interfaces.studio.handlers import (
    Studio,
    api_function,
    apply_preset,
    cancel,
    check_upload,
    compare_mode_fields,
    copy_as_request,
    find_product_early,
    load_settings,
    preview_framing,
    save_preset,
)
from pipeline.interfaces.studio.screen import (
    BACKENDS,
    COMPARE_INPUTS,
    COMPARE_MODE_INPUTS,
    COMPARE_MODES,
    EXAMPLES,
    LABELS,
    REQUEST_INPUTS,
    SETTING_INPUTS,
    SHADOW_KNOBS,
    mode_knobs,
)
from pipeline.interfaces.studio.text import scheduler_note

ASSETS = Path(__file__).resolve().parent / "assets"
QUEUE_SIZE = 16


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
                        preset_name = gr.Textbox(label=LABELS["preset_name"], elem_id="preset_name")
                        save = gr.Button("Save preset", elem_id="save_preset", scale=0)
                    with gr.Row():
                        request_target = gr.Radio(list(BACKENDS), value=BACKENDS[0], label="API request for",
                                                  elem_id="request_target")
                        copy = gr.Button("Copy as API request", elem_id="copy_request", scale=0)
                    request_text = gr.Code(label="API request (key left out)", language="shell",
                                           elem_id="request_text")
            with gr.Column(scale=1), gr.Tabs():
                with gr.Tab("Results"):
                    # "contain": a 3:2 or tall result is shown whole, not cropped to a square thumbnail.
                    gallery = gr.Gallery(label="Results", columns=2, elem_id="gallery", format="png",
                                         buttons=["download", "fullscreen"], object_fit="contain", height="auto")
                    slider = gr.ImageSlider(label="Before / after", type="pil", elem_id="slider")
                    with gr.Accordion("Intermediates", open=False):
                        intermediates = gr.Gallery(label="Subject mask, inpaint mask, canny map, shadow layers",
                                                   columns=3,
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
                  [gallery, slider, intermediates, summary], api_name="generate", concurrency_limit=1,
                  concurrency_id="gpu")
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
        compare_inputs["mode"].change(compare_mode_fields, compare_inputs["mode"],
                                      [compare_inputs[name] for name in COMPARE_MODE_INPUTS],
                                      api_visibility="private", queue=False, show_progress="hidden")
        for name in ("image", "ref_image", "mask"):
            inputs[name].upload(functools.partial(check_upload, name), inputs[name], inputs[name],
                                api_visibility="private", show_progress="hidden", **toasts)
        inputs["random_seed"].click(lambda: -1, None, inputs["seed"], api_name="random_seed", queue=False)
        inputs["scheduler"].change(scheduler_note, inputs["scheduler"], inputs["scheduler_note"],
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
        framing = [inputs[name] for name in ("image", "mask", "mask_model", "canvas", "padding", "placement")]
        gr.on([inputs[name].change for name in ("image", "mask", "mask_model", "canvas", "padding", "placement")],
              preview_framing,
              framing, inputs["framing_preview"], api_visibility="private", show_progress="hidden",
              trigger_mode="always_last", concurrency_limit=1, concurrency_id="mask")
        # Only the user's own choice of mode moves the knobs to its values (Load settings sets them itself).
        inputs["shadow"].input(lambda mode: list(mode_knobs(mode).values()), inputs["shadow"],
                               [inputs[name] for name in SHADOW_KNOBS], api_visibility="private", queue=False)
        copy.click(copy_as_request, [request_target] + setting_components, request_text, api_name="copy_request",
                   queue=False)
    demo.queue(max_size=QUEUE_SIZE)
    demo.studio = studio  # type: ignore[attr-defined]
    return demo


def _input_panel(inputs: dict[str, Any], presets: dict[str, Any]) -> None:
    """The left column: images, prompt, preset and backend, then every setting. Fills ``inputs`` by name."""
    with gr.Row():
        inputs["image"] = widgets.image_box("image", sources=["upload", "clipboard"])
        inputs["ref_image"] = widgets.image_box("ref_image", sources=["upload", "clipboard"])
    inputs["prompt"] = gr.Textbox(label=LABELS["prompt"], placeholder="perfume bottle on a mossy rock in a jungle",
                                  lines=2, elem_id="prompt")
    inputs["negative_prompt"] = gr.Textbox(label=LABELS["negative_prompt"], placeholder="blur, painting, low quality",
                                           elem_id="negative_prompt")
    with gr.Row():
        inputs["preset"] = gr.Dropdown([(preset.name, slug) for slug, preset in presets.items()],
                                       value="default" if "default" in presets else None, label=LABELS["preset"],
                                       elem_id="preset")
        inputs["backend"] = gr.Radio(list(BACKENDS), value=BACKENDS[0], label=LABELS["backend"], elem_id="backend")
        # Shown only with the Hosted API chosen (see build_demo): a key field beside Local GPU asks for nothing.
        inputs["api_key"] = gr.Textbox(label=LABELS["api_key"], type="password", elem_id="api_key", visible=False,
                                       placeholder="your own key (the server's SEGMIND_API_KEY only where lent)")
    inputs["preset_note"] = gr.Markdown(presets["default"].description if "default" in presets else "")
    with gr.Accordion("Product mask (optional)", open=False):
        inputs["mask"] = widgets.image_box("mask")
    with gr.Accordion("Advanced settings", open=False):
        with gr.Row():
            inputs["samples"] = widgets.slider("samples")
            inputs["scheduler"] = widgets.dropdown("scheduler")
        inputs["scheduler_note"] = gr.Markdown(scheduler_note(FIELDS["scheduler"].current_default()))
        with gr.Row():
            inputs["num_inference_steps"] = widgets.slider("num_inference_steps")
            inputs["guidance_scale"] = widgets.slider("guidance_scale")
        with gr.Row():
            inputs["seed"] = widgets.number("seed")
            inputs["random_seed"] = gr.Button("Random seed", elem_id="random_seed", scale=0)
        with gr.Row():
            for name in ("strength", "cn_weight", "ip_adapter_weight"):
                inputs[name] = widgets.slider(name)
        with gr.Row():
            inputs["mask_model"] = widgets.dropdown("mask_model", scale=2, min_width=240)  # room for the longest name
            inputs["mask_grow"] = widgets.slider("mask_grow")
            inputs["mask_feather"] = widgets.slider("mask_feather")
        with gr.Row():
            inputs["canny_low"] = widgets.slider("canny_low")
            inputs["canny_high"] = widgets.slider("canny_high")
        with gr.Row():
            inputs["resolution"] = widgets.generation_size_box()
            inputs["output_size"] = widgets.radio("output_size")
            inputs["output_format"] = widgets.radio("output_format")
    _finishing_panels(inputs)


def _finishing_panels(inputs: dict[str, Any]) -> None:
    """Framing (with its live preview), shadow and light, detail and the quality check's thresholds."""
    with gr.Accordion("Framing", open=False):
        with gr.Row():
            inputs["canvas"] = widgets.canvas_box()
            inputs["placement"] = widgets.dropdown("placement")
        inputs["padding"] = widgets.slider("padding")
        inputs["framing_preview"] = gr.Image(label=LABELS["framing_preview"], interactive=False, height=280,
                                             elem_id="framing_preview")
    with gr.Accordion("Shadow and light", open=False):
        with gr.Row():
            inputs["shadow"] = widgets.dropdown("shadow")
            inputs["shadow_angle"] = widgets.slider("shadow_angle")
        # Two to a row: three knobs with their help squeezed the text to a word a line.
        # Each knob starts on the mode's own value; left there, it sends null.
        knobs = [*SHADOW_KNOBS, "reflection"]
        for pair in (knobs[:2], knobs[2:]):
            with gr.Row():
                for name in pair:
                    inputs[name] = widgets.slider(name)
        inputs["light_match"] = widgets.slider("light_match")
    with gr.Accordion("Detail and quality check", open=False):
        inputs["detail"] = widgets.slider("detail")
        thresholds = ["qa_max_expansion", "qa_max_mask_uncertainty", "qa_max_product_change", "qa_max_upscale"]
        for pair in (thresholds[:2], thresholds[2:]):
            with gr.Row():
                for name in pair:
                    inputs[name] = widgets.decimal(name)


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
        panel["y_axis"] = gr.Dropdown(["none", *axes], value="ip_adapter_weight", label=LABELS["y_axis"],
                                      elem_id="y_axis")
        panel["y_values"] = gr.Textbox(value="0.3, 0.6", label="Y values", elem_id="y_values")
    with gr.Row():  # shown in A/B mode only (build_demo)
        panel["settings_a"] = gr.Textbox(value='{"cn_weight": 0.9}', label=LABELS["settings_a"],
                                         elem_id="settings_a", visible=False)
        panel["settings_b"] = gr.Textbox(value='{"cn_weight": 0.6}', label=LABELS["settings_b"],
                                         elem_id="settings_b", visible=False)
    return panel


def launch_studio(
    *, host: str = "127.0.0.1", port: int = 7860, model_set: str | None = None, output_dir: Path | str = "outputs",
    share: bool = False, quiet: bool = False,
) -> gr.Blocks:
    """Start the studio and its REST endpoint (``/v1``) on one server without blocking; return the Blocks."""
    output_dir = Path(output_dir).resolve()
    demo = build_demo(model_set=model_set, output_dir=output_dir)
    return launch.launch(demo, host=host, port=port, output_dir=output_dir, share=share, quiet=quiet)


def main(argv: list[str] | None = None) -> None:
    # launch_studio is looked up when called, so a test can stand in for it.
    launch.main(argv, lambda **options: launch_studio(**options))


if __name__ == "__main__":
    main()
