"""`flux2 bench`: the FLOP count, the real architectures' sizes, a CPU smoke run, the refusal.

No timing assertions: timings depend on the machine; only their presence is checked.
"""

import json
import re

import pytest
import torch

from flux2cli.bench import runner, timing, weights
from flux2cli.bench.arch import ARCHITECTURES, TEXT_TOKENS, get_arch, image_tokens
from flux2cli.bench.flops import transformer_flops, transformer_params
from flux2cli.bench.memory import DoesNotFit, estimate_memory
from flux2cli.errors import InvalidRequest

from console_script import run


@pytest.mark.parametrize("variant", [
    {},  # tiny-arch as it is: no guidance embedder, mlp_ratio 3
    {"guidance_embeds": True, "mlp_ratio": 2.5, "num_layers": 2},  # [dev]-style embedder, odd MLP width
])
def test_flop_count_agrees_with_torch_flop_counter(variant):
    """The analytic count against torch's FlopCounterMode, which sees every mm/bmm really run.

    The math SDPA backend makes attention two visible bmm calls (the fused CPU kernel is
    not in the counter's table); the module is real, built on the CPU with random weights.
    """
    from diffusers import Flux2Transformer2DModel
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = {**get_arch("tiny-arch").transformer_config(), **variant}
    model = Flux2Transformer2DModel(**config).eval()
    size, batch = 96, 2
    inputs = timing.transformer_inputs(config, size, batch, "cpu", torch.float32, seed=0)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**inputs)
    measured = counter.get_total_flops()
    ours = transformer_flops(config, image_tokens(size, size), TEXT_TOKENS, batch)
    assert measured > 0
    assert abs(ours.total - measured) / measured < 0.02, (ours, measured)


def test_flop_count_scales_as_expected():
    config = get_arch("klein-4b").transformer_config()
    one = transformer_flops(config, 4096, TEXT_TOKENS, batch=1)
    two = transformer_flops(config, 4096, TEXT_TOKENS, batch=2)
    assert two.total == 2 * one.total
    # A double block's weights are split between the image and the text stream, so every
    # token meets half of them: linear work is 2 x tokens x (single + half the double weights).
    d, blocks = 3072, config["num_layers"] + config["num_single_layers"]
    assert one.linear == pytest.approx(2 * (4096 + TEXT_TOKENS) * blocks * 13 * d * d, rel=0.02)
    # Attention grows with tokens².
    bigger = transformer_flops(config, 4 * 4096, TEXT_TOKENS)
    assert bigger.attention / one.attention == pytest.approx(((4 * 4096 + 512) / (4096 + 512)) ** 2)


@pytest.mark.parametrize("name,low,high", [
    ("dev", 31.5e9, 33.0e9),
    ("klein-4b", 3.7e9, 4.1e9),
    ("klein-9b", 8.8e9, 9.3e9),
])
def test_real_architectures_have_their_nominal_size_on_the_meta_device(name, low, high):
    arch = ARCHITECTURES[name]
    transformer, vae = weights.build_on_meta(arch, arch.transformer_config(), with_vae=True)
    params = sum(p.numel() for p in transformer.parameters())
    assert all(p.is_meta for p in transformer.parameters())  # nothing allocated
    assert low < params < high
    assert params == transformer_params(arch.transformer_config())
    assert 80e6 < sum(p.numel() for p in vae.parameters()) < 90e6  # the FLUX.2 VAE, 84 M
    assert transformer.config.joint_attention_dim == arch.joint_attention_dim
    assert transformer.config.guidance_embeds is (name == "dev")


def test_dev_preset_is_diffusers_default_config():
    """diffusers' defaults are FLUX.2 [dev]'s; the preset must not drift from them."""
    import inspect

    from diffusers import Flux2Transformer2DModel

    parameters = inspect.signature(Flux2Transformer2DModel.__init__).parameters
    for key, value in ARCHITECTURES["dev"].transformer_config().items():
        default = parameters[key].default
        assert (tuple(default) if isinstance(value, tuple) else default) == value, key


def test_memory_estimate_counts_weights_by_dtype_and_quantization():
    common = dict(params=4_000_000_000, largest_linear=100_000_000, inner_dim=3072, joint_attention_dim=7680,
                  in_channels=128, image_tokens=4096, text_tokens=512, batch=1, vae_params=84_000_000,
                  vae_pixels=1024 * 1024, vae_channels=128, device_type="cuda")
    bf16 = estimate_memory(quantized_params=0, dtype="bf16", quant="none", **common)
    fp32 = estimate_memory(quantized_params=0, dtype="fp32", quant="none", **common)
    q8 = estimate_memory(quantized_params=3_900_000_000, dtype="bf16", quant="gguf-q8", **common)
    assert bf16.weights == 8e9 and fp32.weights == 16e9
    assert q8.weights < 0.6 * bf16.weights
    assert bf16.total > bf16.weights + bf16.activations  # VAE and headroom are counted too


def test_refusal_happens_before_anything_is_allocated(monkeypatch):
    def must_not_allocate(*args, **kwargs):
        raise AssertionError("weights were allocated although the run does not fit")

    monkeypatch.setattr(weights, "materialize", must_not_allocate)
    with pytest.raises(DoesNotFit) as caught:
        runner.run_bench(runner.BenchOptions(arch="klein-9b", dtype="bf16", device="cpu", memory_gb=8))
    message = str(caught.value)
    assert "\n" not in message and "klein-9b at 1024px" in message and "--memory allows 8.0 GB" in message
    assert isinstance(caught.value, InvalidRequest)  # exit status 2 at the CLI boundary


def test_a_refusal_by_a_hair_shows_the_decimals_that_differ(monkeypatch):
    seen = {}

    def spy(**kwargs):
        seen["estimate"] = estimate_memory(**kwargs)
        return seen["estimate"]

    def just_short(device, override):  # less than needed, but the same to one decimal
        need = seen["estimate"].total / 2**30
        return (round(need, 1) - 0.05 + need) / 2 * 2**30, "only {} of RAM is available"

    monkeypatch.setattr(runner, "estimate_memory", spy)
    monkeypatch.setattr(runner, "_free_memory", just_short)
    with pytest.raises(DoesNotFit) as caught:
        runner.run_bench(runner.BenchOptions(arch="klein-9b", dtype="bf16", device="cpu"))
    need, free = re.search(r"needs about ([\d.]+) GB .* but only ([\d.]+) GB of RAM", str(caught.value)).groups()
    assert float(need) > float(free) and len(need.split(".")[1]) >= 2, caught.value
    assert round(float(need), 1) == round(float(free), 1)  # one decimal would have shown the same figure


@pytest.mark.parametrize("options,message", [
    ({"size": 1000}, "--size must be a multiple of 16"),
    ({"arch": "flux3"}, "unknown architecture 'flux3'"),
    ({"quant": "q4"}, "--quant must be one of"),
    ({"layers": 0}, "--layers must be at least 1"),
    ({"cache": "teacache"}, "--cache must be one of off, taylorseer, fbc"),
    ({"decoder": "small", "vae": False}, "--decoder small times the VAE decode"),
    ({"cache": "fbc", "layers": 1}, "--cache fbc skips the single blocks after the first"),
])
def test_bad_options_are_refused_without_torch_work(options, message):
    with pytest.raises(InvalidRequest, match=message):
        runner.BenchOptions(**options).validate()


def test_gguf_q8_builds_real_gguf_linears_and_runs():
    arch = get_arch("tiny-arch")
    config = arch.transformer_config()
    transformer, _ = weights.build_on_meta(arch, config, with_vae=False)
    weights.swap_quantized_linears(transformer, "gguf-q8", torch.float32)
    weights.materialize(transformer, "cpu", torch.float32)
    kinds = {type(module).__name__ for module in transformer.modules()}
    assert "GGUFLinear" in kinds
    assert not any(p.is_meta for p in transformer.parameters())
    with torch.inference_mode():
        out = transformer(**timing.transformer_inputs(config, 64, 1, "cpu", torch.float32, seed=0))[0]
    assert torch.isfinite(out).all() and 0.1 < out.std() < 10


# -- through the console script -----------------------------------------------------


def test_cpu_smoke_run_through_the_console_script():
    result = run("bench", "--arch", "tiny-arch", "--size", "64", "--steps", "2", "--batch", "2",
                 "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    config = get_arch("tiny-arch").transformer_config()
    assert report["flops"]["per_step"] == transformer_flops(config, 16, TEXT_TOKENS, 2).total
    assert report["params"]["transformer"] == transformer_params(config)
    assert len(report["timing"]["steps_s"]) == 2 and report["timing"]["step_s"] > 0
    assert report["timing"]["vae_decode_s"] > 0 and report["tflops"]["achieved"] > 0
    assert report["memory"]["peak_gb"] > 0 and report["device"]["type"] == "cpu"
    # The typed report keeps the JSON document that scripts read: same keys, same order.
    assert list(report) == ["arch", "description", "nominal_params", "blocks", "params", "size", "image_tokens",
                            "text_tokens", "batch", "steps", "dtype", "quant", "compile", "device", "memory",
                            "flops", "timing", "tflops", "cache", "decoder", "loras"]
    assert report["cache"] is None and report["decoder"] is None and report["loras"] is None  # only asked for
    assert list(report["memory"]) == ["estimate_gb", "free_gb", "free_source", "peak_gb", "peak_kind",
                                      "baseline_gb", "peak_above_baseline_gb"]
    assert list(report["timing"]) == ["build_s", "warmup_s", "step_s", "step_s_mean", "steps_s", "vae_decode_s",
                                      "image_s"]
    assert list(report["tflops"]) == ["achieved", "spec_peak", "measured_gemm"]
    assert list(report["blocks"]) == ["double", "single", "full_double", "full_single"]


def test_console_script_refuses_politely_when_it_does_not_fit():
    result = run("bench", "--arch", "dev", "--dtype", "bf16", "--device", "cpu", "--memory", "24")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dev at 1024px, batch 1, bf16 needs about 70")
    assert "but --memory allows 24.0 GB; try --quant gguf-q8" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_nf4_on_the_cpu_is_refused_in_one_line():
    result = run("bench", "--arch", "tiny-arch", "--quant", "nf4")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --quant nf4 needs bitsandbytes with a CUDA GPU and this run is "
                                     "on the CPU; use --quant gguf-q8 or none")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_cuda_without_a_gpu_is_refused_in_one_line():
    result = run("bench", "--arch", "tiny-arch", "--device", "cuda")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: device cuda: torch sees no CUDA GPU here; use cpu"


def test_cache_and_small_decoder_comparisons_through_the_console_script():
    """The numbers are the machine's; what is checked is that both sides ran and were counted."""
    result = run("bench", "--arch", "tiny-arch", "--size", "64", "--steps", "12", "--device", "cpu",
                 "--cache", "taylorseer", "--decoder", "small", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    cache, decoder = report["cache"], report["decoder"]
    assert cache["mode"] == "taylorseer" and cache["steps"] == 12 and 0 < cache["full_evaluations"] < 12
    assert cache["plain_s"] > 0 and cache["cached_s"] > 0 and cache["speedup"] > 0
    assert decoder["full_s"] > 0 and decoder["small_s"] > 0 and 0 < decoder["small_params"]
