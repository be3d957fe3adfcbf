"""Backdrop studio: the browser UI over the ``pipeline`` library. Loads no model until the first Generate.

    python app.py [--host 127.0.0.1] [--port 7860] [--model-set sdxl|tiny] [--share]
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry or version pings from a studio
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from pipeline import FIELDS, BackdropError, BgReplaceRequest, GenerationCancelled, Progress, default_model_set  # noqa: E402
from pipeline.queue import gpu_queue  # noqa: E402
from pipeline.rest import mount_rest  # noqa: E402
from pipeline.schedulers import SECOND_ORDER  # noqa: E402

log = logging.getLogger("backdrop.app")
ASSETS = Path(__file__).resolve().parent / "assets"
BACKENDS = ("Local GPU", "Hosted API")
PRESETS = ("default",)
QUEUE_SIZE = 16
# Overall progress: where each stage starts and how much of the bar it spans.
_STAGES = {"load": (0.0, 0.1), "mask": (0.1, 0.05), "denoise": (0.15, 0.8), "compose": (0.95, 0.05)}
EXAMPLES = [
    ["product-perfume.jpg", "scene-jungle.jpg", "perfume bottle on a mossy rock in a lush jungle, morning light"],
    ["product-shoe.jpg", "scene-wood.jpg", "running shoe on a rustic wooden deck, warm sunset light"],
    ["product-ring.jpg", "scene-marble.jpg", "gold ring with a diamond on white marble, soft studio light"],
    ["product-chair.jpg", "scene-studio.jpg", "wooden chair in a bright minimalist studio, soft shadows"],
]

_cancelled_sessions: set[str] = set()
_cancel_lock = threading.Lock()


def _slider(name: str, label: str, **kwargs: Any) -> gr.Slider:
    spec = FIELDS[name]
    step = 1 if spec.kind == "int" else 0.05
    return gr.Slider(spec.minimum, spec.maximum, value=spec.default, step=step, label=label, info=spec.help,
                     elem_id=name, **kwargs)


def _choice(name: str, label: str, **kwargs: Any) -> gr.Dropdown:
    spec = FIELDS[name]
    return gr.Dropdown(list(spec.choices), value=spec.default, label=label, info=spec.help, elem_id=name, **kwargs)


def _scheduler_note(name: str) -> str:
    return "Second-order sampler: about two UNet passes per step, so twice the time of Euler." if name in SECOND_ORDER else ""


class Studio:
    """The UI's state that outlives one event: which models to run and where results go."""

    def __init__(self, model_set: str, output_dir: Path) -> None:
        self.model_set = model_set
        self.output_dir = output_dir

    def generate(
        self,
        image: str | None,
        ref_image: str | None,
        prompt: str,
        negative_prompt: str | None = None,
        samples: int = 1,
        scheduler: str = "DPM2 Karras",
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int = -1,
        strength: float = 1.0,
        cn_weight: float = 0.9,
        ip_adapter_weight: float = 0.5,
        mask: str | None = None,
        mask_model: str = FIELDS["mask_model"].default,
        mask_grow: int = 0,
        mask_feather: int = 0,
        canny_low: int = 100,
        canny_high: int = 200,
        resolution: float | None = None,
        output_size: str = "input",
        output_format: str = "jpeg",
        backend: str = BACKENDS[0],
        api_key: str | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple[str, str]], tuple[Any, Any], list[tuple[Any, str]], str]:
        """Gallery (saved files with seeds), before/after pair, intermediates, run summary."""
        session = getattr(request, "session_hash", None) or "api"
        with _cancel_lock:
            _cancelled_sessions.discard(session)
        fields = {name: value for name, value in locals().items() if name in FIELDS}
        try:
            built = _build_request(fields)
            result = self._run(built, session, progress, hosted=backend == BACKENDS[1], api_key=api_key)
        except GenerationCancelled:
            raise gr.Error("Generation cancelled.", title="Cancelled") from None
        except BackdropError as error:
            raise gr.Error(str(error), title="Cannot generate") from None
        except Exception as error:  # never a stack trace in the browser; the log has it
            log.exception("generation failed")
            raise gr.Error(f"Something went wrong ({type(error).__name__}); the server log has the details.") from None
        return self._present(built, result)

    def _run(self, built: BgReplaceRequest, session: str, progress: gr.Progress, *, hosted: bool,
             api_key: str | None) -> Any:
        from pipeline import generate

        def on_progress(event: Progress) -> None:
            start, span = _STAGES.get(event.stage, (0.0, 1.0))
            progress(start + span * event.fraction, desc=event.message)

        def should_cancel() -> bool:
            with _cancel_lock:
                return session in _cancelled_sessions

        if hosted:
            return generate(built, backend="hosted", api_key=api_key or None, on_progress=on_progress,
                            should_cancel=should_cancel)
        with gpu_queue.slot():  # the same line as REST requests: one generation on the device at a time
            return generate(built, model_set=self.model_set, on_progress=on_progress, should_cancel=should_cancel)

    def _present(self, built: BgReplaceRequest, result: Any) -> tuple:
        from pipeline.outputs import save_result

        stem = time.strftime("backdrop-%Y%m%d-%H%M%S")
        paths = save_result(result, self.output_dir, stem=stem)  # saved before shown: nothing is lost
        gallery = [(str(path), f"seed {seed}") for path, seed in zip(paths, result.seeds)]
        before = built.image.convert("RGB").resize(result.images[0].size)
        parts = result.intermediates
        intermediates = [(parts.subject_alpha, "subject mask"), (parts.inpaint_mask, "inpaint mask (white = new)"),
                         (parts.canny, "canny edges")] if parts else []
        return gallery, (before, result.images[0]), intermediates, _summary(result, paths)


def _build_request(fields: dict[str, Any]) -> BgReplaceRequest:
    if not fields.get("image"):
        raise BackdropError("upload a product photo", field="image")
    if not fields.get("ref_image"):
        raise BackdropError("upload a reference picture of the setting", field="ref_image")
    values = dict(fields)
    for name in ("image", "ref_image", "mask"):
        if values.get(name):
            values[name] = Path(values[name])  # our own decoder: EXIF, transparency and clear errors
    if not values.get("resolution"):
        values["resolution"] = None
    return BgReplaceRequest.from_dict(values)


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


def cancel(request: gr.Request = None) -> None:
    session = getattr(request, "session_hash", None) or "api"
    with _cancel_lock:
        _cancelled_sessions.add(session)
    gr.Info("Cancelling after the current step...")


def defaults_for_preset(preset: str) -> list[Any]:
    """The settings a preset stands for (only "default" until the preset library lands)."""
    return [FIELDS[name].default for name in _PRESET_FIELDS]


_PRESET_FIELDS = ("samples", "scheduler", "num_inference_steps", "guidance_scale", "seed", "strength", "cn_weight",
                  "ip_adapter_weight", "mask_model", "mask_grow", "mask_feather", "canny_low", "canny_high",
                  "output_size", "output_format")


def build_demo(model_set: str | None = None, output_dir: Path | str | None = None) -> gr.Blocks:
    """The studio's Blocks. Building it loads no model."""
    studio = Studio(model_set or default_model_set(),
                    Path(output_dir or os.environ.get("BACKDROP_OUTPUT_DIR") or "outputs"))
    with gr.Blocks(title="Backdrop") as demo:
        gr.Markdown("# Backdrop\nNew backgrounds for product photos. The product's own pixels are never repainted.")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    image = gr.Image(label="Product photo", type="filepath", image_mode=None, elem_id="image",
                                     sources=["upload", "clipboard"])
                    ref_image = gr.Image(label="Reference setting", type="filepath", image_mode=None,
                                         elem_id="ref_image", sources=["upload", "clipboard"])
                prompt = gr.Textbox(label="Prompt", placeholder="perfume bottle on a mossy rock in a jungle",
                                    lines=2, elem_id="prompt")
                negative_prompt = gr.Textbox(label="Negative prompt", placeholder="blur, painting, low quality",
                                             elem_id="negative_prompt")
                with gr.Row():
                    preset = gr.Dropdown(list(PRESETS), value="default", label="Preset", elem_id="preset")
                    backend = gr.Radio(list(BACKENDS), value=BACKENDS[0], label="Backend", elem_id="backend")
                    api_key = gr.Textbox(label="Hosted API key", type="password", elem_id="api_key",
                                         placeholder="or set SEGMIND_API_KEY")
                with gr.Accordion("Product mask (optional)", open=False):
                    mask = gr.Image(label="Your own mask: white = product", type="filepath", image_mode=None,
                                    elem_id="mask")
                with gr.Accordion("Advanced settings", open=False):
                    with gr.Row():
                        samples = _slider("samples", "Images")
                        scheduler = _choice("scheduler", "Scheduler")
                    scheduler_note = gr.Markdown(_scheduler_note(FIELDS["scheduler"].default))
                    with gr.Row():
                        steps = _slider("num_inference_steps", "Steps")
                        guidance = _slider("guidance_scale", "Guidance scale")
                    with gr.Row():
                        seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed",
                                         minimum=FIELDS["seed"].minimum, maximum=FIELDS["seed"].maximum)
                        random_seed = gr.Button("Random seed", elem_id="random_seed", scale=0)
                    with gr.Row():
                        strength = _slider("strength", "Strength")
                        cn_weight = _slider("cn_weight", "ControlNet weight")
                        ip_weight = _slider("ip_adapter_weight", "Reference weight")
                    with gr.Row():
                        mask_model = _choice("mask_model", "Mask model")
                        mask_grow = _slider("mask_grow", "Grow mask (px)")
                        mask_feather = _slider("mask_feather", "Feather (px)")
                    with gr.Row():
                        canny_low = _slider("canny_low", "Canny low")
                        canny_high = _slider("canny_high", "Canny high")
                    with gr.Row():
                        resolution = gr.Number(value=None, precision=0, label="Generation size (empty = model's own)",
                                               elem_id="resolution", minimum=FIELDS["resolution"].minimum,
                                               maximum=FIELDS["resolution"].maximum)
                        output_size = gr.Radio(list(FIELDS["output_size"].choices), value="input",
                                               label="Return at", elem_id="output_size")
                        output_format = gr.Radio(list(FIELDS["output_format"].choices), value="jpeg",
                                                 label="Format", elem_id="output_format")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=1):
                gallery = gr.Gallery(label="Results", columns=2, elem_id="gallery", format="png",
                                     buttons=["download", "fullscreen"])
                slider = gr.ImageSlider(label="Before / after", type="pil", elem_id="slider")
                with gr.Accordion("Intermediates", open=False):
                    intermediates = gr.Gallery(label="Subject mask, inpaint mask, canny map", columns=3,
                                               elem_id="intermediates", format="png")
                summary = gr.Markdown(elem_id="summary")

        gr.Examples([[str(ASSETS / product), str(ASSETS / scene), text] for product, scene, text in EXAMPLES],
                    inputs=[image, ref_image, prompt], label="Examples")

        inputs = [image, ref_image, prompt, negative_prompt, samples, scheduler, steps, guidance, seed, strength,
                  cn_weight, ip_weight, mask, mask_model, mask_grow, mask_feather, canny_low, canny_high,
                  resolution, output_size, output_format, backend, api_key]
        event = run.click(studio.generate, inputs, [gallery, slider, intermediates, summary], api_name="generate",
                          concurrency_limit=1, concurrency_id="gpu")
        stop.click(cancel, None, None, cancels=[event], api_name="cancel", queue=False)
        random_seed.click(lambda: -1, None, seed, api_name="random_seed", queue=False)
        scheduler.change(_scheduler_note, scheduler, scheduler_note, api_name="scheduler_note", queue=False)
        preset.change(defaults_for_preset, preset,
                      [samples, scheduler, steps, guidance, seed, strength, cn_weight, ip_weight, mask_model,
                       mask_grow, mask_feather, canny_low, canny_high, output_size, output_format],
                      api_name="apply_preset", queue=False)
    demo.queue(max_size=QUEUE_SIZE)
    demo.studio = studio  # type: ignore[attr-defined]
    return demo


def launch_studio(
    *, host: str = "127.0.0.1", port: int = 7860, model_set: str | None = None, output_dir: Path | str = "outputs",
    share: bool = False, quiet: bool = False,
) -> gr.Blocks:
    """Start the studio and its REST endpoint (``/v1``) on one server without blocking; return the Blocks."""
    output_dir = Path(output_dir).resolve()
    demo = build_demo(model_set=model_set, output_dir=output_dir)
    demo.launch(server_name=host, server_port=port, share=share, allowed_paths=[str(output_dir)],
                prevent_thread_lock=True, quiet=quiet)
    mount_rest(demo.server_app, model_set=demo.studio.model_set, queue=gpu_queue, host=host)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Backdrop studio")
    parser.add_argument("--host", default=os.environ.get("BACKDROP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BACKDROP_PORT", "7860")))
    parser.add_argument("--model-set", choices=("sdxl", "tiny"), default=default_model_set())
    parser.add_argument("--output-dir", default=os.environ.get("BACKDROP_OUTPUT_DIR", "outputs"))
    parser.add_argument("--share", action="store_true", help="Also serve on a public gradio.live link.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo = launch_studio(host=args.host, port=args.port, model_set=args.model_set, output_dir=args.output_dir,
                         share=args.share)
    print(f"REST endpoint: POST http://{args.host}:{args.port}/v1/bg-replace (docs at /v1/docs)", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
