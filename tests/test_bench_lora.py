"""`flux2 bench --lora-rank R`: random LoRAs really act on the steps it times, and leave none behind."""

from __future__ import annotations

import pytest
import torch

from flux2cli.bench import timing, weights
from flux2cli.bench.lora import compare_loras, random_lora
from flux2cli.bench.runner import BenchOptions, run_bench
from flux2cli.errors import InvalidRequest


@pytest.fixture()
def tiny_arch():
    arch = BenchOptions(arch="tiny-arch", size=64).validate()
    config = arch.transformer_config(1)
    transformer, _ = weights.build_on_meta(arch, config, False)
    weights.materialize(transformer, "cpu", torch.float32, 0)
    return transformer, timing.transformer_inputs(config, 64, 1, "cpu", torch.float32, 0)


def test_a_random_lora_changes_the_prediction_and_covers_every_block_linear(tiny_arch):
    transformer, inputs = tiny_arch
    with torch.inference_mode():
        base = transformer(**inputs)[0]
    tensors = random_lora(transformer, 4, seed=1)
    linears = [name for name, module in transformer.named_modules()
               if isinstance(module, torch.nn.Linear) and "blocks." in name]
    assert len(tensors) == 2 * len(linears)
    transformer.load_lora_adapter(tensors, prefix="transformer", adapter_name="x")
    transformer.set_adapters(["x"], [1.0])
    with torch.inference_mode():
        adapted = transformer(**inputs)[0]
    assert not torch.equal(base, adapted) and torch.isfinite(adapted).all()


def test_the_comparison_reports_every_case_and_removes_its_adapters(tiny_arch):
    transformer, inputs = tiny_arch
    with torch.inference_mode():
        before = transformer(**inputs)[0]
    result = compare_loras(transformer, inputs, rank=4, steps=1, device="cpu", seed=0)
    assert result.rank == 4 and result.modules > 0 and result.adapter_params > 0
    assert min(result.base_s, result.one_s, result.three_s, result.fused_s, result.swap_s) > 0
    assert not getattr(transformer, "peft_config", None)  # nothing left loaded
    with torch.inference_mode():
        assert torch.allclose(transformer(**inputs)[0], before, atol=1e-5)  # unfused: the base again


def test_the_report_carries_it_and_bad_ranks_are_refused():
    report = run_bench(BenchOptions(arch="tiny-arch", size=64, steps=1, warmup=0, vae=False, layers=1, lora_rank=2))
    assert report.as_json()["loras"]["rank"] == 2
    for options in (BenchOptions(arch="tiny-arch", lora_rank=0), BenchOptions(arch="tiny-arch", lora_rank=4, quant="nf4")):
        with pytest.raises(InvalidRequest, match="--lora-rank"):
            options.validate()
