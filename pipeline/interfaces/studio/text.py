"""The studio's sentences: the run summary, the comparison's, Load settings' line, the scheduler note, and
where each stage of a run sits on the progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.contract.choices import SECOND_ORDER
from pipeline.contract.request import FIELDS
from pipeline.contract.result import Progress
from pipeline.interfaces.studio.screen import short_label

# Overall progress: where each stage starts and how much of the bar it spans.
STAGES = {"load": (0.0, 0.1), "mask": (0.1, 0.05), "denoise": (0.15, 0.8), "compose": (0.95, 0.05)}
REUSED = {"prepare": "mask + canny", "prompt": "prompt embeddings", "image_embeds": "reference embeddings"}


def progress_reporter(progress: Any) -> Callable[[Progress], None]:
    """An ``on_progress`` callback moving Gradio's ``progress`` bar over the whole run, stage by stage."""

    def on_progress(event: Progress) -> None:
        start, span = STAGES.get(event.stage, (0.0, 1.0))
        progress(min(1.0, start + span * event.fraction), desc=event.message)

    return on_progress


def run_summary(result: Any, paths: list[Path]) -> str:
    """Seeds, time per stage, device or hosted calls, sizes and where the files were saved (Markdown)."""
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
    rows += _finishing_rows(info)
    rows.append("**Saved** " + ", ".join(f"`{path}`" for path in paths))
    return "\n\n".join(rows)


def _finishing_rows(info: dict[str, Any]) -> list[str]:
    """What framing, light match and the quality check have to say about the images (Markdown rows)."""
    from pipeline.stages.framing import enlargement_warning
    from pipeline.stages.quality import quality_summary

    rows = []
    if "product_box" in info:
        rows.append(f"**Framing** canvas {'x'.join(map(str, info.get('canvas_size', info['output_size'])))}, "
                    f"product at {tuple(info['product_box'])} (left, top, width, height), scale {info['scale']:g}")
    if warning := enlargement_warning(info):
        rows.append(f"**Warning** {warning}")
    if info.get("product_change"):
        changes = ", ".join(f"{change:g}" for change in info["product_change"])
        rows.append(f"**Product colours adjusted** by light match: mean change {changes} levels (8-bit)")
    for index, quality in enumerate(info.get("quality") or []):
        rows.append(f"**Quality, image {index + 1}** {quality_summary(quality)}")
    return rows


def compare_summary(comparison: Any, cells: int, folder: Path) -> str:
    """How many cells, how long, the shared seed, what was computed once, where it was saved (Markdown)."""
    reused = ", ".join(f"{REUSED[key]} ×{count}" for key, count in comparison.reuse_counts.items())
    return (f"**{cells} cells** in {comparison.seconds:.1f} s · seed {comparison.cells[0].result.seeds[0]}"
            f" · computed once and reused: {reused}\n\n**Saved** `{folder}`")


def loaded_summary(source: str, values: dict[str, Any]) -> str:
    """What Load settings restored, in a line: the seed, the prompt and every setting off its default."""
    changed = [f"{short_label(name)} {value}" for name, value in values.items()
               if name not in ("prompt", "negative_prompt", "seed") and value != FIELDS[name].current_default()]
    prompt = values.get("prompt") or ""
    return (f"Settings loaded from {source}: seed {values.get('seed')}, "
            f"prompt \"{prompt[:60]}{'…' if len(prompt) > 60 else ''}\"; "
            + (f"changed from the defaults: {', '.join(changed)}."
               if changed else "every other setting at its default."))


def scheduler_note(name: str) -> str:
    """Said under the scheduler: a second-order sampler takes about twice the time."""
    return ("Second-order sampler: about two UNet passes per step, so twice the time of Euler."
            if name in SECOND_ORDER else "")
