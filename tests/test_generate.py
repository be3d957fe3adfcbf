"""Local generation with the tiny model set: determinism, the weights' effect, every scheduler, sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scenes import perfume_bottle

from pipeline import SCHEDULER_NAMES, generate
from pipeline.stages.prepare import resolve_seeds


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def run(tiny_models, request):
    return generate(request, models=tiny_models)


def test_same_seed_gives_bit_identical_images_and_another_seed_does_not(tiny_models, make_request):
    first = run(tiny_models, make_request(seed=7))
    again = run(tiny_models, make_request(seed=7))
    other = run(tiny_models, make_request(seed=8))
    assert first.seeds == again.seeds == (7,)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert np.abs(pixels(first.images[0]) - pixels(other.images[0])).mean() > 1.0


def test_samples_come_from_one_call_and_each_can_be_remade_alone(tiny_models, make_request):
    batch = run(tiny_models, make_request(seed=100, samples=3))
    assert batch.seeds == (100, 101, 102) and len(batch.images) == 3
    alone = run(tiny_models, make_request(seed=101, samples=1))
    # Batched and single maths round differently in the last bits; the images must agree to the eye.
    assert np.abs(pixels(batch.images[1]) - pixels(alone.images[0])).max() <= 2
    assert np.abs(pixels(batch.images[0]) - pixels(batch.images[1])).mean() > 1.0


def test_random_seed_is_drawn_and_reported(tiny_models, make_request):
    result = run(tiny_models, make_request(seed=-1, samples=2))
    assert result.seeds[1] == result.seeds[0] + 1 and result.request.seed == -1
    assert len({resolve_seeds(-1, 1)[0] for _ in range(20)}) > 15


@pytest.mark.parametrize(("field", "low", "high"), [("cn_weight", 0.0, 0.9), ("ip_adapter_weight", 0.0, 0.5)])
def test_conditioning_weights_change_the_output(tiny_models, make_request, field, low, high):
    without = run(tiny_models, make_request(**{field: low}))
    with_it = run(tiny_models, make_request(**{field: high}))
    assert np.abs(pixels(without.images[0]) - pixels(with_it.images[0])).mean() > 0.5


def test_reference_image_steers_the_output(tiny_models, make_request):
    from scenes import reference_scene

    jungle = run(tiny_models, make_request(ref_image=reference_scene("jungle", 256, 256)))
    marble = run(tiny_models, make_request(ref_image=reference_scene("marble", 256, 256)))
    assert np.abs(pixels(jungle.images[0]) - pixels(marble.images[0])).mean() > 0.5


# The everyday run (pytest -m "not slow") tries two: the default (second-order) and a multistep one.
EVERYDAY_SCHEDULERS = ("DPM2 Karras", "DPM++ 2M Karras")


@pytest.mark.parametrize("scheduler", [
    pytest.param(name, marks=() if name in EVERYDAY_SCHEDULERS else pytest.mark.slow) for name in SCHEDULER_NAMES])
def test_every_scheduler_runs(tiny_models, make_request, scheduler):
    result = run(tiny_models, make_request(scheduler=scheduler, resolution=64))
    image = pixels(result.images[0])
    assert result.images[0].size == (512, 512)
    assert image.std() > 1.0  # a real picture, not a flat or empty frame


def test_strength_below_one_runs_fewer_steps(tiny_models, make_request):
    steps = []
    result = generate(make_request(strength=0.5, num_inference_steps=20), models=tiny_models,
                      on_progress=lambda p: steps.append(p.message) if p.stage == "denoise" else None)
    assert result.images and steps[-1] == "Step 10/10"


@pytest.mark.parametrize("size", [(900, 600), pytest.param((600, 1200), marks=pytest.mark.slow)])
def test_product_pixels_survive_at_the_inputs_own_size(u2netp_home, tiny_models, make_request, size):
    photo, _ = perfume_bottle(*size)
    result = run(tiny_models, make_request(image=photo, mask=None, mask_model="u2netp", resolution=128))
    out = pixels(result.images[0])
    assert result.images[0].size == size
    alpha = np.asarray(result.intermediates.subject_alpha)
    solid = alpha == 255
    assert solid.sum() > 0.05 * alpha.size
    assert np.abs(out[solid] - pixels(photo)[solid]).max() <= 1
    assert np.abs(out[alpha == 0] - 255).mean() > 5  # and the white backdrop really was replaced


@pytest.mark.slow
def test_generation_size_output_and_intermediates(tiny_models, make_request):
    result = run(tiny_models, make_request(image=perfume_bottle(900, 600)[0], mask=perfume_bottle(900, 600)[1],
                                           output_size="generation", resolution=128))
    width, height = result.info["generation_size"]
    assert result.images[0].size == (width, height) and width % 8 == 0 and height % 8 == 0
    parts = result.intermediates
    assert parts.subject_alpha.size == (900, 600) and parts.subject_alpha.mode == "L"
    assert parts.inpaint_mask.size == (width, height) and parts.canny.size == (width, height)
    assert len(parts.backgrounds) == 1
    assert set(result.timings) >= {"prepare", "generate", "compose", "total"}


def test_progress_reports_each_step_and_cancel_stops(tiny_models, make_request):
    from pipeline import GenerationCancelled

    seen = []
    generate(make_request(), models=tiny_models, on_progress=seen.append)
    denoise = [p for p in seen if p.stage == "denoise" and p.message.startswith("Step")]
    assert len(denoise) == 20 and denoise[-1].fraction == 1.0
    with pytest.raises(GenerationCancelled):
        generate(make_request(), models=tiny_models, should_cancel=lambda: True)


@pytest.mark.parametrize("scheduler, steps, strength", [("DPM2 Karras", 25, 1.0),
                                                        pytest.param("Heun", 20, 1.0, marks=pytest.mark.slow),
                                                        pytest.param("DPM2 a Karras", 20, 0.5, marks=pytest.mark.slow)])
def test_second_order_progress_counts_steps_not_unet_calls(tiny_models, make_request, scheduler, steps, strength):
    """Second-order samplers call the UNet about twice per step: the count must still end at its total."""
    seen = []
    generate(make_request(scheduler=scheduler, num_inference_steps=steps, strength=strength, resolution=64),
             models=tiny_models, on_progress=lambda p: seen.append(p) if p.message.startswith("Step") else None)
    total = int(steps * strength)
    counts = [tuple(map(int, p.message.removeprefix("Step ").split("/"))) for p in seen]
    # Each step said once, in order, though diffusers calls back about twice per step (2 x steps - 1 UNet
    # calls): counting the calls read "Step 49/25", and saying each call printed every step twice.
    assert [done for done, _ in counts] == list(range(1, total + 1))
    assert {shown_total for _, shown_total in counts} == {total}
    assert counts[-1] == (total, total) and seen[-1].fraction == 1.0
    assert all(p.fraction <= 1.0 for p in seen)


def test_sidecars_record_the_source_file_names(tiny_models, make_request, bottle, tmp_path):
    from pipeline.contract.request import BgReplaceRequest
    from pipeline.workflows.outputs import save_result

    bottle[0].save(tmp_path / "my-perfume.jpg")
    bottle[1].save(tmp_path / "my-mask.png")
    make_request().ref_image.save(tmp_path / "jungle.png")
    request = make_request(image=tmp_path / "my-perfume.jpg", ref_image=tmp_path / "jungle.png",
                           mask=tmp_path / "my-mask.png")
    names = {"image": "my-perfume.jpg", "ref_image": "jungle.png", "mask": "my-mask.png"}
    assert request.sources == names and request.replace(seed=5).sources == names
    assert request.replace(mask=None).sources == {"image": "my-perfume.jpg", "ref_image": "jungle.png"}
    (path,) = save_result(generate(request, models=tiny_models), tmp_path / "out", stem="my-perfume")
    assert json.loads(path.with_suffix(".json").read_text())["sources"] == names
    assert "sources" not in BgReplaceRequest.from_dict(request.settings() | {"image": bottle[0],
                                                                            "ref_image": bottle[0]}).settings()
    unnamed = generate(make_request(), models=tiny_models)  # images given as pictures, not files
    assert "sources" not in unnamed.metadata(0)


def test_cached_embeddings_hold_no_autograd_graph(tiny_models, make_request):
    """The encoders run outside the pipeline's no_grad; a graph kept in the reuse cache would pin the image
    encoder's activations on the GPU for a whole sweep."""
    import torch

    from pipeline.stages.reuse import Reuse

    assert any(p.requires_grad for p in tiny_models.pipe.image_encoder.parameters())  # else this proves nothing
    reuse = Reuse()
    generate(make_request(), models=tiny_models, reuse=reuse)
    generate(make_request(guidance_scale=1.0), models=tiny_models, reuse=reuse)  # the no-CFG entries too
    cached = [tensor for entry in reuse.prompts.values() for tensor in entry.values() if tensor is not None]
    cached += [tensor for _, embeds in reuse.image_embeds.values() for tensor in embeds]
    assert len(cached) >= 8 and all(isinstance(tensor, torch.Tensor) for tensor in cached)
    assert not any(tensor.requires_grad or tensor.grad_fn is not None for tensor in cached)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_the_whole_path(make_request, dtype):
    """Real GPUs run float16: the same loading, embeddings, VAE and compositing code in a half type, here on
    the CPU (the tiny set in float32 would hide a dtype mismatch between any two of them)."""
    import torch

    from pipeline.backends.local.models import load_models

    models = load_models("tiny", device="cpu", dtype=dtype)
    assert models.pipe.unet.dtype == models.pipe.image_encoder.dtype == getattr(torch, dtype)
    request = make_request(seed=5, samples=2, guidance_scale=5.0)
    result = generate(request, models=models)
    alpha = np.asarray(result.intermediates.subject_alpha)
    for image, background in zip(result.images, result.intermediates.backgrounds):
        assert pixels(background).std() > 1.0  # a picture, not NaNs turned black
        solid = alpha == 255
        assert np.array_equal(pixels(image)[solid], pixels(request.image.convert("RGB"))[solid])


def on_backdrop(photo, alpha, backdrop):
    """``photo``'s product laid over ``backdrop`` with its true alpha: the same product, another old backdrop."""
    a = np.asarray(alpha, dtype=np.float32)[..., None] / 255
    pixels = np.asarray(photo, dtype=np.float32) * a + np.asarray(backdrop, dtype=np.float32) * (1 - a)
    return Image.fromarray(pixels.round().astype(np.uint8))


def ramp(width, height, reverse=False):
    """A backdrop dark on one side and light on the other: layout and colour a new scene could inherit."""
    values = np.linspace(25, 230, width, dtype=np.float32)[::-1 if reverse else 1]
    return Image.fromarray(np.broadcast_to(values[None, :, None], (height, width, 3)).round().astype(np.uint8))


def test_the_old_backdrop_does_not_steer_the_new_one(tiny_models, make_request, bottle, reference, monkeypatch):
    """Below strength 1 generation starts from the starting image noised part way. Two photos of the same
    product on opposite backdrops must start from the same image and give the same new background.

    Measured at strength 0.2, mean difference of the two backgrounds (RGB, 0-255): 9.8 when generation
    started from the photo, 1.0 now. The tiny set's random VAE and UNet scramble the layout, so the
    background's correlation with the old backdrop is about 0 either way and cannot show the difference."""
    photo, alpha = bottle
    pipe_class = type(tiny_models.pipe)
    real_call, starts = pipe_class.__call__, []
    monkeypatch.setattr(pipe_class, "__call__", lambda pipe, **kwargs: starts.append(kwargs["image"])
                        or real_call(pipe, **kwargs))
    results = [generate(make_request(image=on_backdrop(photo, alpha, ramp(*photo.size, reverse)), mask=alpha,
                                     strength=0.2, seed=21), models=tiny_models) for reverse in (False, True)]
    region = np.asarray(results[0].intermediates.inpaint_mask) == 255  # where the background is generated
    first, second = (np.asarray(result.intermediates.backgrounds[0], dtype=np.float32)[region] for result in results)
    assert np.abs(first - second).mean() < 3.0
    size = results[0].intermediates.inpaint_mask.size
    clear = np.asarray(results[0].intermediates.subject_alpha.resize(size, Image.Resampling.BOX)) == 0
    reference_colour = np.asarray(reference.convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
    assert len(starts) == 2 and clear.sum() > 0.2 * clear.size
    for start in starts:  # the old backdrop's place: flat, in the reference's mean colour
        assert np.abs(np.asarray(start, dtype=np.float32)[clear] - reference_colour).max() <= 2.5


def test_strength_one_runs_every_step_at_the_inpainting_models_0_9999(tiny_models, make_request):
    steps = []
    result = generate(make_request(num_inference_steps=20), models=tiny_models,
                      on_progress=lambda p: steps.append(p.message) if p.stage == "denoise" else None)
    assert result.request.strength == 1.0 and result.info["pipeline_strength"] == 0.9999
    assert steps[-1] == "Step 20/20"
    half = generate(make_request(strength=0.5), models=tiny_models)
    assert half.info["pipeline_strength"] == 0.5


def test_the_same_request_and_seed_save_byte_identical_files(tiny_models, make_request, tmp_path):
    """The image embeds what remakes it (request, seed, models), not this run's timings."""
    from pipeline.workflows.outputs import save_result

    request = make_request(seed=77, samples=2)
    first = save_result(generate(request, models=tiny_models), tmp_path / "one", stem="bottle")
    second = save_result(generate(request, models=tiny_models), tmp_path / "two", stem="bottle")
    assert [path.name for path in first] == [path.name for path in second]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
        assert "timings" in json.loads(a.with_suffix(".json").read_text())  # the sidecar still has them
