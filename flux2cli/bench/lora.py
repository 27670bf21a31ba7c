"""`flux2 bench --lora-rank R`: transformer steps with no LoRA, one, three stacked and one fused.

The adapters are random, of rank R on every linear layer of the transformer blocks (what
ai-toolkit's FLUX.2 LoRAs train), and go through the same diffusers calls the engine's
``LoraAdapters`` makes (``load_lora_adapter``, ``set_adapters``, ``fuse_lora``), so the
ratios are the ones a real LoRA of that rank costs. Swapping is timed as the engine does it
between two generations: ``set_adapters`` from one loaded adapter to another.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any

from flux2cli.bench.timing import sync

ADAPTERS = ("a", "b", "c")
BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


@dataclass(frozen=True)
class LoraComparison:
    rank: int
    modules: int  # linear layers each adapter touches
    adapter_params: int  # parameters of one adapter
    base_s: float  # seconds per transformer step, median
    one_s: float
    three_s: float
    fused_s: float
    swap_s: float  # set_adapters from one loaded adapter to another, median


def random_lora(transformer: Any, rank: int, seed: int) -> dict[str, Any]:
    """A random adapter of ``rank`` on every block linear, in diffusers/PEFT keys."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith(BLOCKS):
            weight = module.weight
            # Small values keep activations where the base puts them: timing must not meet inf/NaN.
            down = torch.randn(rank, module.in_features, generator=generator) * 0.01
            up = torch.randn(module.out_features, rank, generator=generator) * 0.01
            tensors[f"transformer.{name}.lora_A.weight"] = down.to(weight.device, weight.dtype)
            tensors[f"transformer.{name}.lora_B.weight"] = up.to(weight.device, weight.dtype)
    return tensors


def step_seconds(transformer: Any, inputs: dict[str, Any], steps: int, device: str) -> float:
    """Median seconds of one transformer pass over the same inputs, after one untimed pass."""
    import torch

    times = []
    with torch.inference_mode():
        for index in range(steps + 1):
            sync(device)
            start = time.perf_counter()
            transformer(**inputs)
            sync(device)
            if index:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_loras(transformer: Any, inputs: dict[str, Any], rank: int, steps: int, device: str,
                  seed: int) -> LoraComparison:
    base = step_seconds(transformer, inputs, steps, device)
    # All drawn before any is loaded: a loaded adapter adds linear layers of its own.
    adapters = {name: random_lora(transformer, rank, seed + offset) for offset, name in enumerate(ADAPTERS)}
    modules = len(adapters["a"]) // 2
    adapter_params = sum(tensor.numel() for tensor in adapters["a"].values())
    for name in ADAPTERS:
        transformer.load_lora_adapter(adapters.pop(name), prefix="transformer", adapter_name=name)
    try:
        transformer.set_adapters(["a"], [1.0])
        one = step_seconds(transformer, inputs, steps, device)
        transformer.set_adapters(list(ADAPTERS), [1.0, 0.5, -0.5])
        three = step_seconds(transformer, inputs, steps, device)
        swaps = []
        for index in range(8):
            sync(device)
            start = time.perf_counter()
            transformer.set_adapters([ADAPTERS[index % 2]], [1.0])
            sync(device)
            swaps.append(time.perf_counter() - start)
        transformer.set_adapters(["a"], [1.0])
        transformer.fuse_lora(adapter_names=["a"])
        fused = step_seconds(transformer, inputs, steps, device)
        transformer.unfuse_lora()
    finally:
        with warnings.catch_warnings():  # PEFT notes each active adapter it deletes
            warnings.simplefilter("ignore")
            transformer.delete_adapters(list(ADAPTERS))
    return LoraComparison(rank, modules, adapter_params, round(base, 4), round(one, 4), round(three, 4),
                          round(fused, 4), round(statistics.median(swaps), 5))
