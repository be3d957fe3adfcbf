"""Side-by-side comparisons: a grid over one or two parameters, A/B of two whole settings, local vs hosted.

Every cell gets the same images and the same seed; the mask, canny map and prompt and reference
embeddings are computed once for the whole comparison (``Reuse``) and only what a cell changes is redone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from pipeline.contract.errors import BackdropError
from pipeline.contract.request import FIELDS, BgReplaceRequest
from pipeline.contract.result import BgReplaceResult, CancelCheck, Progress, ProgressCallback
from pipeline.stages.prepare import resolve_seeds
from pipeline.stages.reuse import Reuse

SWEEP_AXES = ("cn_weight", "ip_adapter_weight", "guidance_scale", "strength", "num_inference_steps", "scheduler",
              "seed", "prompt", "preset", "shadow", "shadow_opacity", "shadow_angle",
              "reflection", "light_match", "detail",
              "canvas", "padding", "placement")
MAX_CELLS = 36
_CELL_SIDE = 320  # the longest side of a cell in the grid image
_LABEL_HEIGHT = 40

Runner = Callable[..., BgReplaceResult]  # generate()-like: (request, *, reuse, on_progress, should_cancel)


@dataclass(frozen=True)
class Cell:
    x: str  # the X value as shown
    y: str | None
    request: BgReplaceRequest
    result: BgReplaceResult
    x_axis: str | None = None  # set for a grid, whose captions then say which value is which parameter's
    y_axis: str | None = None

    @property
    def image(self) -> Image.Image:
        return self.result.images[0]

    @property
    def label(self) -> str:
        """The cell's caption: "cn_weight=0.5 · scheduler=Euler" in a grid, "A" or "local" side by side."""
        x = f"{self.x_axis}={self.x}" if self.x_axis else self.x
        if self.y is None:
            return x
        return f"{x} · {self.y_axis}={self.y}" if self.y_axis else f"{x} · {self.y}"


@dataclass(frozen=True)
class Comparison:
    x_axis: str
    x_labels: tuple[str, ...]
    y_axis: str | None
    y_labels: tuple[str, ...]
    cells: tuple[Cell, ...]  # row by row: every X value of the first Y value, then the next Y value
    grid: Image.Image
    seconds: float
    reuse_counts: dict[str, int] = field(default_factory=dict)


def parse_axis_values(axis: str, text: str) -> list[Any]:
    """Values typed by a person: commas between numbers or names; ``|`` or new lines between prompts."""
    if axis not in SWEEP_AXES:
        raise BackdropError(f"{axis!r} cannot be swept; choose one of {', '.join(SWEEP_AXES)}", field="axis")
    separator = r"\s*(?:\||\n)\s*" if axis == "prompt" else r"\s*[,;\n]\s*"
    items = [item for item in re.split(separator, text.strip()) if item]
    if not items:
        raise BackdropError(f"give at least one value for {axis}", field=f"{axis} values")
    if axis == "preset":
        from pipeline.workflows.presets import get_preset

        return [get_preset(item).slug for item in items]
    return [FIELDS[axis].coerce(item) for item in items]


def cell_request(base: BgReplaceRequest, axis: str, value: Any) -> BgReplaceRequest:
    if axis == "preset":
        from pipeline.workflows.presets import get_preset

        return base.replace(**get_preset(value).settings)
    return base.replace(**{axis: value})


def run_grid(
    base: BgReplaceRequest,
    run: Runner,
    x_axis: str,
    x_values: list[Any],
    y_axis: str | None = None,
    y_values: list[Any] | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> Comparison:
    """Every combination of the X (and Y) values, one image each, same inputs and seed throughout."""
    if y_axis == x_axis:
        raise BackdropError("X and Y must be different parameters", field="y_axis")
    rows = list(y_values) if y_axis else [None]
    if len(x_values) * len(rows) > MAX_CELLS:
        raise BackdropError(f"{len(x_values)}x{len(rows)} cells is too many; at most {MAX_CELLS}", field="axis values")
    base = _one_sample_fixed_seed(base)
    plan = []
    for y_value in rows:
        for x_value in x_values:
            request = cell_request(base, x_axis, x_value)
            if y_axis:
                request = cell_request(request, y_axis, y_value)
            plan.append((_shown(x_axis, x_value), None if y_axis is None else _shown(y_axis, y_value), request))
    return _run_plan(plan, run, x_axis, y_axis, on_progress, should_cancel, name_axes=True)


def run_columns(
    base: BgReplaceRequest,
    columns: dict[str, tuple[BgReplaceRequest, Runner]],
    axis: str,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> Comparison:
    """Whole requests side by side (A/B settings, or one request on two backends), same seed throughout."""
    seed = _one_sample_fixed_seed(base).seed
    plan = [(label, None, request.replace(samples=1, seed=seed), runner)
            for label, (request, runner) in columns.items()]
    return _run_plan(plan, None, axis, None, on_progress, should_cancel)


def _run_plan(plan: list[tuple], run: Runner | None, x_axis: str, y_axis: str | None,
              on_progress: ProgressCallback | None, should_cancel: CancelCheck | None,
              name_axes: bool = False) -> Comparison:
    report = on_progress or (lambda progress: None)
    reuse = Reuse()
    started = time.perf_counter()
    cells = []
    for index, (x_label, y_label, request, *own_runner) in enumerate(plan):
        runner = own_runner[0] if own_runner else run
        where = f"cell {index + 1}/{len(plan)}"

        def cell_progress(progress: Progress, where: str = where, index: int = index) -> None:
            report(Progress(progress.stage, (index + progress.fraction) / len(plan), f"{where}: {progress.message}"))

        result = runner(request, reuse=reuse, on_progress=cell_progress, should_cancel=should_cancel)
        axes = {"x_axis": x_axis, "y_axis": y_axis} if name_axes else {}
        cells.append(Cell(x=x_label, y=y_label, request=request, result=result, **axes))
    x_labels = tuple(dict.fromkeys(cell.x for cell in cells))
    y_labels = tuple(dict.fromkeys(cell.y for cell in cells if cell.y is not None))
    return Comparison(x_axis=x_axis, x_labels=x_labels, y_axis=y_axis, y_labels=y_labels, cells=tuple(cells),
                      grid=grid_image(cells, x_axis, x_labels, y_axis, y_labels),
                      seconds=time.perf_counter() - started, reuse_counts=dict(reuse.counts))


def _one_sample_fixed_seed(base: BgReplaceRequest) -> BgReplaceRequest:
    """One image per cell, and one seed for all of them (drawn now if the request says random)."""
    return base.replace(samples=1, seed=resolve_seeds(base.seed, 1)[0])


def _shown(axis: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def grid_image(cells: list[Cell], x_axis: str, x_labels: tuple[str, ...], y_axis: str | None,
               y_labels: tuple[str, ...]) -> Image.Image:
    """The cells in a labelled grid: X values across the top, Y values down the left, axis names in the corner."""
    first = cells[0].image
    scale = _CELL_SIDE / max(first.size)
    cell_w, cell_h = max(1, round(first.width * scale)), max(1, round(first.height * scale))
    rows = max(1, len(y_labels))
    left = 180 if y_axis else 0
    font = _font(16)
    grid = Image.new("RGB", (left + cell_w * len(x_labels), _LABEL_HEIGHT * 2 + cell_h * rows), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((8, 10), f"X: {x_axis}" + (f"   Y: {y_axis}" if y_axis else ""), fill="black", font=font)
    for column, label in enumerate(x_labels):
        draw.text((left + column * cell_w + 8, _LABEL_HEIGHT + 10), label, fill="black", font=font)
    for row, label in enumerate(y_labels):
        draw.text((8, _LABEL_HEIGHT * 2 + row * cell_h + cell_h // 2 - 8), label, fill="black", font=font)
    for index, cell in enumerate(cells):
        row, column = divmod(index, len(x_labels))
        # Cells of another shape (a canvas axis) are fitted in, never stretched to the first cell's shape.
        thumb = cell.image.convert("RGB")
        thumb.thumbnail((cell_w, cell_h), Image.Resampling.LANCZOS)
        grid.paste(thumb, (left + column * cell_w + (cell_w - thumb.width) // 2,
                           _LABEL_HEIGHT * 2 + row * cell_h + (cell_h - thumb.height) // 2))
    return grid


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the small bitmap font still labels
        return ImageFont.load_default()
