"""The faster paths keep the results: fused attention, per-sample offload batches, skipped VAE encodes,
and the large-photo compositing shortcuts."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
from PIL import Image
from scenes import perfume_bottle

from pipeline import generate
from pipeline.backends.local.models import LoadedModels, resolve_runtime
from pipeline.stages.compose import SOLID_ALPHA, composite_product


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def fused_models(tiny_models):
    """The tiny pipeline with every self-attention layer fused, on its own copy of the weights."""
    from pipeline.backends.local.speed import fuse_self_attention

    pipe = copy.deepcopy(tiny_models.pipe)
    counts = [fuse_self_attention(model) for model in (pipe.unet, pipe.controlnet)]
    assert all(count > 0 for count in counts)
    return LoadedModels(pipe=pipe, spec=tiny_models.spec, runtime=tiny_models.runtime,
                        scheduler_config=tiny_models.scheduler_config)


@pytest.mark.slow
def test_fused_self_attention_gives_the_same_image(tiny_models, fused_models, make_request):
    plain = generate(make_request(seed=3), models=tiny_models)
    fused = generate(make_request(seed=3), models=fused_models)
    assert np.abs(pixels(plain.images[0]) - pixels(fused.images[0])).max() <= 2


@pytest.mark.slow
def test_fusing_keeps_the_ip_adapter_working(fused_models, make_request):
    """diffusers' own fuse_qkv_projections() replaces the IP-Adapter's processors; ours must not."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    processors = fused_models.pipe.unet.attn_processors.values()
    assert sum(isinstance(processor, IPAdapterAttnProcessor2_0) for processor in processors) > 0
    without = generate(make_request(ip_adapter_weight=0.0), models=fused_models)
    with_it = generate(make_request(ip_adapter_weight=0.5), models=fused_models)
    assert np.abs(pixels(without.images[0]) - pixels(with_it.images[0])).mean() > 0.5


@pytest.mark.slow
def test_offload_modes_run_samples_one_at_a_time_with_the_same_images(tiny_models, make_request):
    """BACKDROP_MEMORY_MODE=model sends one sample at a time through the UNet; the images must not change."""
    one_at_a_time = LoadedModels(pipe=tiny_models.pipe, spec=tiny_models.spec,
                                 runtime=resolve_runtime("cpu", "float32", "model"),
                                 scheduler_config=tiny_models.scheduler_config)
    calls = []
    real_call = type(tiny_models.pipe).__call__

    def counting_call(pipe, *args, **kwargs):
        calls.append(kwargs["num_images_per_prompt"])
        return real_call(pipe, *args, **kwargs)

    progress = []
    type(tiny_models.pipe).__call__ = counting_call
    try:
        batched = generate(make_request(seed=50, samples=3), models=tiny_models)
        single = generate(make_request(seed=50, samples=3), models=one_at_a_time, on_progress=progress.append)
    finally:
        type(tiny_models.pipe).__call__ = real_call
    assert calls == [3, 1, 1, 1]
    assert single.seeds == batched.seeds
    for a, b in zip(batched.images, single.images):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2
    denoise = [p.fraction for p in progress if p.stage == "denoise"]
    assert denoise == sorted(denoise) and denoise[-1] == 1.0  # one progress bar across the three runs


def count_vae_encodes(pipe, monkeypatch) -> list[int]:
    calls = []
    real_encode = pipe.vae.encode
    monkeypatch.setattr(pipe.vae, "encode", lambda *a, **k: calls.append(1) or real_encode(*a, **k))
    return calls


def test_no_vae_encode_whose_result_is_unused(tiny_models, make_request, monkeypatch):
    from diffusers import UNet2DConditionModel

    from pipeline.backends.local.diffusion import BackdropInpaintPipeline

    # A 9-channel inpainting UNet reads the masked product's latents, and the starting image's go into the
    # first step's noise (strength 1 runs as 0.9999): two encodes, whatever the number of samples.
    calls = count_vae_encodes(tiny_models.pipe, monkeypatch)
    generate(make_request(strength=1.0, samples=2), models=tiny_models)
    assert len(calls) == 2

    # A 4-channel UNet (a plain SDXL fine-tune) reads the product's latents and never the masked ones.
    config = dict(tiny_models.pipe.unet.config) | {"in_channels": 4}
    components = dict(tiny_models.pipe.components) | {"unet": UNet2DConditionModel.from_config(config)}
    pipe = BackdropInpaintPipeline(**components)
    pipe.unet.set_attn_processor(dict(tiny_models.pipe.unet.attn_processors))  # the IP-Adapter's layers
    pipe.unet.encoder_hid_proj = tiny_models.pipe.unet.encoder_hid_proj
    pipe.unet.config.encoder_hid_dim_type = "ip_image_proj"
    plain = LoadedModels(pipe=pipe, spec=tiny_models.spec, runtime=tiny_models.runtime,
                         scheduler_config=tiny_models.scheduler_config)
    calls = count_vae_encodes(pipe, monkeypatch)
    generate(make_request(strength=1.0), models=plain)
    assert len(calls) == 1  # upstream encodes twice here


def test_model_offload_takes_the_image_encoder_off_the_gpu_in_turn():
    from pipeline.backends.local.diffusion import BackdropInpaintPipeline

    assert BackdropInpaintPipeline.model_cpu_offload_seq.split("->") == [
        "text_encoder", "text_encoder_2", "image_encoder", "unet", "vae"]


def test_speed_options_follow_the_device_and_the_compile_flag(monkeypatch):
    from pipeline.backends.local.speed import SpeedOptions

    monkeypatch.delenv("BACKDROP_COMPILE", raising=False)
    assert SpeedOptions.for_runtime("cpu", "none").applied() == []
    assert SpeedOptions.for_runtime("cuda", "none").applied() == ["channels_last", "fuse_qkv"]
    monkeypatch.setenv("BACKDROP_COMPILE", "1")
    assert "compile" in SpeedOptions.for_runtime("cuda", "none").applied()
    assert "compile" not in SpeedOptions.for_runtime("cuda", "model").applied()  # not with offload hooks
    assert SpeedOptions.for_runtime("cuda", "sequential").applied() == ["channels_last", "fuse_qkv"]


def full_resolution_fill(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The edge colours computed the slow, direct way: every reach blurred at full resolution."""
    solid = (alpha >= SOLID_ALPHA).astype(np.float32)
    values = rgb.astype(np.float32)
    estimate = values.copy()
    for sigma in (32.0, 8.0, 2.0):
        weight = cv2.GaussianBlur(solid, (0, 0), sigma)
        total = cv2.GaussianBlur(values * solid[..., None], (0, 0), sigma)
        found = weight > 1e-3
        estimate[found] = total[found] / weight[found, None]
    return estimate


@pytest.mark.slow
def test_large_photo_compositing_matches_the_direct_computation(monkeypatch):
    """Past 1536 px the edge colour comes from a shrunk copy; the result must match the full-size maths.
    (The threshold is lowered here so a 1.5 MP photo takes the large-photo path at a tenth of the cost.)"""
    import pipeline.stages.compose

    monkeypatch.setattr(pipeline.stages.compose, "_FILL_WORKING_SIDE", 512)
    photo, alpha = perfume_bottle(750, 500)
    photo = photo.resize((1500, 1000), Image.Resampling.BICUBIC)
    soft = cv2.GaussianBlur(np.asarray(alpha.resize((1500, 1000), Image.Resampling.BICUBIC)), (31, 31), 0)
    green = Image.new("RGB", (300, 200), (0, 160, 0))
    out = pixels(composite_product(photo, Image.fromarray(soft), green))
    rgb = np.asarray(photo)
    assert (out[soft == 255] == rgb[soft == 255]).all()
    assert (out[soft == 0] == (0, 160, 0)).all()
    edge = (soft > 0) & (soft < 255)
    a = soft[edge].astype(np.float32)[:, None] / 255
    expected = full_resolution_fill(rgb, soft)[edge] * a + np.array([0, 160, 0]) * (1 - a)
    difference = np.abs(out[edge] - expected)
    assert difference.mean() < 1.0 and np.percentile(difference, 99) < 8


def test_compositing_accepts_arrays_and_images_alike():
    photo, alpha = perfume_bottle(300, 200)
    green = Image.new("RGB", (60, 40), (0, 160, 0))
    from_images = composite_product(photo, alpha, green)
    from_arrays = composite_product(np.asarray(photo), np.asarray(alpha), green)
    assert np.array_equal(np.asarray(from_images), np.asarray(from_arrays))


def test_the_soft_edge_is_found_once_per_request_and_every_sample_keeps_the_product(tiny_models, make_request,
                                                                                    monkeypatch):
    import pipeline.stages.prepare

    found = []
    real = pipeline.stages.prepare.soft_edge
    monkeypatch.setattr(pipeline.stages.prepare, "soft_edge", lambda *a: found.append(1) or real(*a))
    request = make_request(samples=3, resolution=64)
    result = generate(request, models=tiny_models)
    assert len(found) == 1 and len(result.images) == 3
    photo, alpha = np.asarray(request.image.convert("RGB")), np.asarray(result.intermediates.subject_alpha)
    for image in result.images:
        assert image.size == request.image.size
        assert (np.asarray(image)[alpha == 255] == photo[alpha == 255]).all()
    shared = composite_product(photo, alpha, result.intermediates.backgrounds[0])
    assert np.array_equal(np.asarray(shared), np.asarray(result.images[0]))  # the shared edge changes nothing


@pytest.mark.slow
def test_compiled_blocks_last_through_a_sweep_of_requests(tiny_models, make_request, monkeypatch):
    """BACKDROP_COMPILE=1, with dynamo's "eager" backend: the same tracing, guards and cache as on a GPU,
    without inductor's code generation. Every block shares one cache of compiled code; these requests add
    variants (two widths, IP-Adapter weight 0, no guidance, two samples) past torch's default of 8 entries,
    which with fullgraph=True failed the fourth request."""
    import torch

    from pipeline.backends.local.speed import compile_transformer_blocks

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)  # torch's default, restored afterwards
    pipe = copy.deepcopy(tiny_models.pipe)
    assert all(compile_transformer_blocks(model, backend="eager") > 0 for model in (pipe.unet, pipe.controlnet))
    compiled = LoadedModels(pipe=pipe, spec=tiny_models.spec, runtime=tiny_models.runtime,
                            scheduler_config=tiny_models.scheduler_config)
    try:
        for changes in ({"ip_adapter_weight": 0.5}, {"ip_adapter_weight": 0.7}, {"ip_adapter_weight": 0.0},
                        {"guidance_scale": 1.0}, {"samples": 2, "resolution": 80}):
            # strength 0.1: 2 steps a request, as the variants are under test, not the maths
            request = make_request(**({"seed": 11, "resolution": 64, "strength": 0.1} | changes))
            result = generate(request, models=compiled)
        plain = generate(request, models=tiny_models)
        for a, b in zip(result.images, plain.images):
            assert np.abs(pixels(a) - pixels(b)).max() <= 2
    finally:
        torch._dynamo.reset()


def test_every_generation_runs_on_the_chosen_cpu_thread_count(tiny_models, make_request, monkeypatch):
    """Importing rembg (pymatting's numba) sets OpenMP's thread count to every CPU, so a process that had found a
    mask used to generate on more threads than one that had not (a Ray actor), and their images came out a level
    apart. Each generation now sets the count itself: BACKDROP_CPU_THREADS, else OMP_NUM_THREADS, else every CPU."""
    import os

    import torch

    before = torch.get_num_threads()
    seen: list[int] = []
    try:
        every_cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        for chosen, omp, expected in (("1", "2", 1), ("", "1", 1), ("", "", every_cpu)):
            monkeypatch.setenv("BACKDROP_CPU_THREADS", chosen)
            monkeypatch.setenv("OMP_NUM_THREADS", omp)
            torch.set_num_threads(3)  # what an import changed behind our back
            seen.clear()
            generate(make_request(), models=tiny_models,
                     on_progress=lambda p: seen.append(torch.get_num_threads()) if p.stage == "denoise" else None)
            assert set(seen) == {expected}, (chosen, omp, seen)
    finally:
        torch.set_num_threads(before)


def test_the_same_thread_count_makes_the_same_image_whatever_ran_before(tiny_models, make_request, monkeypatch):
    import torch

    monkeypatch.setenv("BACKDROP_CPU_THREADS", "1")
    before = torch.get_num_threads()
    try:
        first = generate(make_request(seed=5), models=tiny_models).images[0]
        torch.set_num_threads(2)
        second = generate(make_request(seed=5), models=tiny_models).images[0]
    finally:
        torch.set_num_threads(before)
    assert (pixels(first) == pixels(second)).all()
