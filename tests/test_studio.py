"""The studio's widgets follow the request's FIELDS: a default, range or choice changes in one place."""

from __future__ import annotations

import gradio as gr

from pipeline.contract.request import FIELDS


def widgets_by_name(demo) -> dict:
    return {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None) in FIELDS}


def test_every_setting_widget_takes_its_default_range_and_choices_from_fields():
    import app
    from pipeline.interfaces.studio.screen import LABELS, SETTING_INPUTS, on_screen_value

    widgets = widgets_by_name(app.build_demo(model_set="tiny"))
    assert set(widgets) == set(SETTING_INPUTS) | {"image", "ref_image", "mask"}
    for name, widget in widgets.items():
        spec = FIELDS[name]
        assert widget.label == LABELS[name]
        if spec.kind == "image":
            continue
        if isinstance(widget, (gr.Slider, gr.Dropdown, gr.Radio, gr.Number)):
            assert widget.value == on_screen_value(name, spec.current_default()), name
        if isinstance(widget, gr.Slider):
            assert (widget.minimum, widget.maximum) == (spec.minimum, spec.maximum), name
        if name == "canvas":  # no fixed list: the photo's own framing, the named sizes, or one typed in
            from pipeline.contract.canvases import NAMED_CANVASES

            assert [choice[1] for choice in widget.choices] == [spec.default, *NAMED_CANVASES]
            assert widget.allow_custom_value
        elif isinstance(widget, (gr.Dropdown, gr.Radio)):
            assert [choice[1] for choice in widget.choices] == list(spec.choices), name


def test_a_changed_field_changes_its_widget(monkeypatch):
    import dataclasses

    import app

    spec = FIELDS["guidance_scale"]
    monkeypatch.setitem(FIELDS, "guidance_scale", dataclasses.replace(spec, default=6.0, maximum=30.0))
    slider = widgets_by_name(app.build_demo(model_set="tiny"))["guidance_scale"]
    assert (slider.value, slider.minimum, slider.maximum) == (6.0, spec.minimum, 30.0)
