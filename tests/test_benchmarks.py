"""The benchmarks run (so they cannot rot) and their architecture configs are the real models' sizes.

The GPU benchmark runs here at its reduced scale on the CPU: same code, tiny widths. Figures from these
runs mean nothing; benchmarks/README.md says how to take real ones.
"""

from __future__ import annotations

import json
import sys

import pytest

# The benchmark scripts (import gpu, ...) come from benchmarks/, on pytest's pythonpath (pyproject.toml).


@pytest.mark.slow
def test_gpu_benchmark_runs_plain_and_backdrop_on_the_same_weights(tmp_path):
    import gpu

    out = tmp_path / "gpu.json"
    report = gpu.main(["--scale", "reduced", "--device", "cpu", "--size", "64", "--samples", "1", "--controlnets",
                       "small", "--modes", "model", "--mode-samples", "1", "--no-warmup", "--json", str(out)])
    rows = [(row["recipe"], row["controlnet"], row["memory_mode"]) for row in report["rows"]]
    assert rows == [("plain", "small", "none")] + [("backdrop", "small", "none")] * 4 + [("backdrop", "full", "model")]
    variants = [row["variant"] for row in report["rows"][1:5]]  # the speed-ups, added one at a time
    assert variants[0].startswith("no speed-ups") and variants[-1].startswith("Backdrop defaults")
    assert all(row["seconds"] > 0 and row["steps"] == 20 and row["samples"] == 1 for row in report["rows"])
    assert len(report["speedups"]) == 4 and all(entry["speedup"] > 0 for entry in report["speedups"])
    assert json.loads(out.read_text())["rows"] == report["rows"]
    assert [row["output_mp_sdxl"] for row in report["detail"]] == [1, 4, 16]
    assert all(row["pending"] == "needs a GPU run" for row in report["detail"])  # no GPU here


@pytest.mark.slow
def test_detail_benchmark_reports_the_pass_over_the_first_generation(tmp_path):
    import detail

    report = detail.main(["--factors", "1", "2", "--json", str(tmp_path / "detail.json")])
    assert [(row["output_side"], row["tiles"]) for row in report["rows"]] == [(128, 1), (256, 9)]
    assert all(row["generate_s"] > 0 and row["detail_s"] > 0 and row["ratio"] > 0 for row in report["rows"])
    assert report["rows"][1]["detail_s"] > report["rows"][0]["detail_s"]


# Parameter counts of the published checkpoints (their fp16 safetensors are twice this in bytes).
PUBLISHED_SIZES = {
    "unet": 2_567_478_084,  # SDXL's 2,567,463,684 plus the inpainting UNet's five extra input channels
    "controlnet": 1_251_014_160,  # controlnet-canny-sdxl-1.0, 2.5 GB
    "controlnet_small": 168_318_480,  # controlnet-canny-sdxl-1.0-small, 0.32 GB
    "vae": 83_653_863,
    "vae_fp16_fix": 83_653_863,
    "text_encoder": 123_060_480,  # CLIP ViT-L/14 text
    "text_encoder_2": 694_659_840,  # OpenCLIP ViT-bigG/14 text
    "image_encoder": 1_844_907_264,  # OpenCLIP ViT-bigG/14 vision, the IP-Adapter's encoder
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_architecture_configs_build_the_published_model_sizes(name):
    import gpu
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    config = gpu.config(name, "full")
    builders = {
        "unet": lambda: UNet2DConditionModel.from_config(config),
        "controlnet": lambda: ControlNetModel.from_config(config),
        "controlnet_small": lambda: ControlNetModel.from_config(config),
        "vae": lambda: AutoencoderKL.from_config(config),
        "vae_fp16_fix": lambda: AutoencoderKL.from_config(config),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**config)),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(CLIPTextConfig(**config)),
        "image_encoder": lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**config)),
    }
    with init_empty_weights():  # shapes only, no memory
        model = builders[name]()
    assert sum(parameter.numel() for parameter in model.parameters()) == PUBLISHED_SIZES[name]


def test_only_the_fp16_fix_vae_may_skip_the_fp32_upcast():
    import gpu

    assert gpu.config("vae", "full")["force_upcast"] is True
    assert gpu.config("vae_fp16_fix", "full")["force_upcast"] is False


@pytest.mark.slow
def test_preprocess_benchmark_times_every_stage(tmp_path, u2netp_home):
    import preprocess

    report = preprocess.main(["--sizes", "256x256", "640x480", "--repeats", "1", "--json", str(tmp_path / "p.json")])
    assert [case["size"] for case in report["cases"]] == ["256x256", "640x480"]
    for case in report["cases"]:
        seconds = case["seconds"]
        assert set(seconds) == {*preprocess.STAGES, "total", "total, same photo again"}
        assert sum(seconds[stage] for stage in preprocess.STAGES) <= seconds["total"]
        assert seconds["total, same photo again"] < seconds["total"] - 0.5 * seconds["mask"]  # the mask is remembered
        assert case["total_fastest_seconds"] <= seconds["total"] <= case["total_slowest_seconds"]
        assert case["mask_network_seconds"] > 0
        assert case["cpu_stolen_percent"] is None or 0 <= case["cpu_stolen_percent"] <= 100
    assert [case["size"] for case in report["framed"]] == ["256x256 on 2000x2000", "640x480 on 2000x2000"]
    for plain, framed in zip(report["cases"], report["framed"]):
        assert framed["ratio_to_unframed"] == round(framed["seconds"]["total"] / plain["seconds"]["total"], 3)


def test_stolen_cpu_time_is_the_steal_share_of_the_ticks_between_two_readings():
    from _common import cpu_ticks, stolen_percent

    assert stolen_percent((10, 1000), (40, 1200)) == 15.0
    assert stolen_percent(None, (40, 1200)) is None and stolen_percent((10, 1000), (10, 1000)) is None
    ticks = cpu_ticks()
    if sys.platform.startswith("linux"):
        assert ticks is not None and 0 <= ticks[0] <= ticks[1]


@pytest.mark.slow
def test_overhead_benchmark_separates_the_denoising_loop(tmp_path, u2netp_home):
    import overhead

    report = overhead.main(["--samples", "1", "--repeats", "1", "--size", "256", "--json", str(tmp_path / "o.json")])
    seconds = report["cases"][0]["seconds"]
    assert seconds["denoising_loop"] > 0 and seconds["overhead"] > 0
    assert seconds["overhead"] + seconds["denoising_loop"] == pytest.approx(seconds["total"])


@pytest.mark.slow
def test_app_cold_start_answers_quickly_without_loading_models(tmp_path):
    import cold_start

    report = cold_start.main(["--repeats", "1", "--json", str(tmp_path / "c.json")])
    # The target is 10 s on the 2-core development machine; CI machines vary, so allow slack here.
    assert report["median"]["page_seconds"] < 30
    assert report["median"]["models_loaded"] is False


def test_layers_benchmark_times_each_layer_against_compositing_alone(tmp_path):
    import layers

    report = layers.main(["--sizes", "320x240", "--repeats", "1", "--json", str(tmp_path / "l.json")])
    (case,) = report["cases"]
    assert set(case["seconds"]) == {*layers.LAYERS, layers.ORIGINAL_PREPARE}
    assert case["ratio_to_compositing"][layers.PLAIN] == 1 and all(value > 0 for value in case["seconds"].values())
    assert json.loads((tmp_path / "l.json").read_text())["cases"][0]["size"] == "320x240"
