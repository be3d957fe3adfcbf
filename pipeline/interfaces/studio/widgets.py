"""The studio's input widgets, made from the request's ``FIELDS``: each takes its default, range, choices
and help text from there and its label from ``LABELS``, so a field changes in one place."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline.contract.request import FIELDS
from pipeline.interfaces.studio.screen import LABELS, on_screen_value


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


def image_box(name: str, **layout: Any) -> ImageUpload:
    """An image field's upload box; the file's path goes to Backdrop's own decoder."""
    return ImageUpload(label=LABELS[name], type="filepath", image_mode=None, elem_id=name, **layout)


def slider(name: str) -> gr.Slider:
    """A number field as a slider over its range: whole steps for whole numbers."""
    spec = FIELDS[name]
    step = 1 if spec.kind == "int" or spec.maximum - spec.minimum > 50 else 0.05
    return FieldSlider(spec.minimum, spec.maximum, value=spec.current_default(), step=step, label=LABELS[name],
                       info=spec.help, elem_id=name)


def number(name: str, info: str | None = None) -> gr.Number:
    """A whole-number field as a box (for ranges too wide for a slider), starting on its default."""
    spec = FIELDS[name]
    return FieldNumber(value=on_screen_value(name, spec.current_default()), precision=0, label=LABELS[name],
                       elem_id=name, info=info or spec.help)


def decimal(name: str) -> gr.Number:
    """A number field as a box, for ranges a slider's steps would not fit (a threshold of 0.05 out of 100)."""
    spec = FIELDS[name]
    return FieldNumber(value=spec.current_default(), label=LABELS[name], elem_id=name,
                       info=f"{spec.help} {spec.minimum:g}..{spec.maximum:g}")


def canvas_box() -> gr.Dropdown:
    """The canvas: the photo's own framing, a named size, or a size typed in (2000x2000)."""
    from pipeline.contract.canvases import NAMED_CANVASES

    spec = FIELDS["canvas"]
    return gr.Dropdown([spec.default, *NAMED_CANVASES], value=spec.current_default(), label=LABELS["canvas"],
                       info="or type WIDTHxHEIGHT", allow_custom_value=True, elem_id="canvas")


def dropdown(name: str, **layout: Any) -> gr.Dropdown:
    """A choice field as a drop-down list, starting on its default (which the environment may set)."""
    spec = FIELDS[name]
    return gr.Dropdown(list(spec.choices), value=spec.current_default(), label=LABELS[name], info=spec.help,
                       elem_id=name, **layout)


def radio(name: str) -> gr.Radio:
    """A choice field with few choices as radio buttons, starting on its default."""
    spec = FIELDS[name]
    return gr.Radio(list(spec.choices), value=spec.current_default(), label=LABELS[name], elem_id=name)


def generation_size_box() -> gr.Number:
    """The generation size: 0 is "the model's own"; the info says the field's range."""
    spec = FIELDS["resolution"]
    return number("resolution", info=f"{spec.minimum}..{spec.maximum}: generate at about this² pixels")
