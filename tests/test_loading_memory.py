"""Memory options: offload planning, per-request VAE tiling, and --compile."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.loading import LoadOptions
from flux2cli.pipeline.memory import (
    AutoTiling,
    apply_offload,
    compile_transformer,
    plan_offload,
    tiling_threshold,
)
from flux2cli.pipeline.registry import get_model
from flux2cli.pipeline.request import GenerationRequest

import standins
from standins import mean_abs_diff, run_flux2

GB = 1024**3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- offload


@pytest.mark.parametrize("free_gb,expected", [(80, "none"), (40, "model"), (12, "sequential")])
def test_auto_offload_follows_free_gpu_memory(free_gb, expected):
    plan = plan_offload("auto", "cuda", 40.0, free_bytes=free_gb * GB)
    assert plan.mode == expected
    assert f"free GPU memory {free_gb:.1f} GB" in plan.reason


def test_auto_offload_on_cpu_and_explicit_choices():
    assert plan_offload("auto", "cpu", 70.0).mode == "none"
    assert plan_offload("model", "cuda", 70.0).mode == "model"
    # bitsandbytes cannot be offloaded sequentially: auto settles for model offload.
    assert plan_offload("auto", "cuda", 18.0, free_bytes=4 * GB, quantization="bnb-nf4").mode == "model"
    with pytest.raises(InvalidRequest, match="where everything is in RAM already"):
        plan_offload("model", "cpu", 70.0)
    with pytest.raises(InvalidRequest, match="--offload takes one of"):
        plan_offload("sometimes", "cuda", 70.0)
    with pytest.raises(InvalidRequest, match="--vae-tiling takes one of"):
        LoadOptions(vae_tiling="maybe").validate()


def test_apply_offload_calls_the_pipeline_hooks():
    calls = []
    pipe = SimpleNamespace(enable_model_cpu_offload=lambda device: calls.append(("model", device)),
                           enable_sequential_cpu_offload=lambda device: calls.append(("sequential", device)),
                           to=lambda device: calls.append(("to", device)))
    for mode in ("model", "sequential", "none"):
        apply_offload(pipe, SimpleNamespace(mode=mode), "cuda")
    assert calls == [("model", "cuda"), ("sequential", "cuda"), ("to", "cuda")]


# --------------------------------------------------------------------------- tiling


def test_tiling_threshold_is_2_megapixels_at_the_models_scale():
    dev = get_model("dev")
    policy = AutoTiling.__new__(AutoTiling)
    policy.mode, policy.threshold_pixels = "auto", tiling_threshold(dev.size_scale)
    assert not policy.wants_tiling(*dev.dimensions("landscape", "1mp"))  # 1344x768
    assert policy.wants_tiling(*dev.dimensions("landscape", "2mp"))  # 2688x1536
    assert policy.wants_tiling(*dev.dimensions("landscape", "4mp"))  # 5376x3072
    tiny = get_model("tiny")
    policy.threshold_pixels = tiling_threshold(tiny.size_scale)
    assert dev.dimensions("landscape", "4mp") == (5376, 3072) and tiny.dimensions("landscape", "4mp") == (320, 192)
    assert not policy.wants_tiling(*tiny.dimensions("landscape", "1mp"))
    assert policy.wants_tiling(*tiny.dimensions("landscape", "4mp"))


@pytest.fixture(scope="module")
def tiny_engines():
    from flux2cli.pipeline.engine import Engine

    return {mode: Engine.load("tiny", LoadOptions(vae_tiling=mode)) for mode in ("auto", "off")}


def _tiny(size, seed=3):
    return GenerationRequest.create("a red circle on a blue background", model="tiny", size=size, seed=seed, steps=2)


def test_tiling_is_decided_per_request_size(tiny_engines):
    engine = tiny_engines["auto"]
    tiling = engine.pipe.vae._flux2_tiling
    small = engine.generate(_tiny("1mp"))[0].image
    assert small.size == (80, 48) and tiling.decisions[-1] == (80, 48, False)
    large = engine.generate(_tiny("4mp"))[0].image
    assert large.size == (320, 192) and tiling.decisions[-1] == (320, 192, True)
    assert engine.generate(_tiny("1mp"))[0].image.size == (80, 48) and tiling.decisions[-1][2] is False
    # The tiled 4mp decode is the untiled one, up to the blending of tile seams: 13.3 levels on
    # average with the decoder refined on eleven colours (843c220), whose seams differ more;
    # the image of another seed differs by about 25 (tiny draws noise at 4mp).
    untiled = tiny_engines["off"].generate(_tiny("4mp"))[0].image
    assert tiny_engines["off"].pipe.vae._flux2_tiling.decisions[-1] == (320, 192, False)
    assert mean_abs_diff(large, untiled) < 18


def test_load_model_passes_the_memory_options():
    from flux2cli import load_model

    engine = load_model(model="tiny", vae_tiling="on", offload="none")
    assert engine.pipe.vae._flux2_tiling.mode == "on"
    with pytest.raises(InvalidRequest, match="where everything is in RAM already"):
        load_model(model="tiny", offload="sequential")


# --------------------------------------------------------------------------- compile


def test_compile_once_per_model():
    from diffusers import AutoencoderKLFlux2

    transformer = standins.build_transformer(guidance_embeds=False)
    assert compile_transformer(transformer) == "repeated blocks"
    assert compile_transformer(transformer) == "already compiled"
    vae = AutoencoderKLFlux2(**standins.VAE_CONFIG)  # no _repeated_blocks: the whole model
    assert compile_transformer(vae) == "whole model"


def test_flux2_generate_compile_and_4mp_tiling(tmp_path):
    result = run_flux2("generate", "a red circle on a blue background", "--model", "tiny", "--compile",
                       "--size", "4mp", "--vae-tiling", "on", "--steps", "2", "--seed", "1",
                       "--output-dir", str(tmp_path), "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "compile on the first image (slow); each new image size compiles again" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    path = Path(json.loads(result.stdout)["images"][0]["path"])
    with Image.open(path) as png:
        assert png.size == (320, 192)
