"""Random weights: a FLUX.2 transformer (and VAE) built on ``meta``, then filled on the device.

Order matters: the model is first built on the ``meta`` device (no memory) so that the
runner can count its parameters and check the memory estimate against what the device
has free; only then are the weights allocated, straight in their final dtype or
quantized format, and filled with cheap random values (a tiled random block, not the
default init: seconds instead of minutes at 32 B parameters).
"""

from __future__ import annotations

import math
from typing import Any

from flux2cli.bench.arch import Architecture


def build_on_meta(arch: Architecture, config: dict[str, Any], with_vae: bool):
    import torch

    from flux2cli.pipeline.loading import quiet_library_output

    quiet_library_output()
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    with torch.device("meta"):
        transformer = Flux2Transformer2DModel(**config)
        vae = AutoencoderKLFlux2(**arch.vae_config()) if with_vae else None
    transformer.eval().requires_grad_(False)
    if vae is not None:
        vae.eval().requires_grad_(False)
    return transformer, vae


def _block_linears(model):
    """(parent, attribute, Linear) for every linear inside the transformer blocks."""
    import torch

    for blocks in (model.transformer_blocks, model.single_transformer_blocks):
        for parent in blocks.modules():
            for name, child in parent.named_children():
                if type(child) is torch.nn.Linear:
                    yield parent, name, child


def swap_quantized_linears(model, quant: str, dtype) -> None:
    """Replace the blocks' linears by quantized ones, still on meta (what real checkpoints quantize)."""
    import torch

    for parent, name, linear in list(_block_linears(model)):
        if quant == "gguf-q8":
            from diffusers.quantizers.gguf.utils import GGUFLinear

            if linear.in_features % 32:
                continue  # Q8_0 works in blocks of 32 weights per row
            with torch.device("meta"):
                new = GGUFLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                 compute_dtype=dtype)
        else:
            import bitsandbytes as bnb

            if linear.in_features % 64:
                continue
            with torch.device("meta"):
                new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, linear.bias is not None,
                                        compute_dtype=dtype, quant_type="nf4")
        new.requires_grad_(False)
        new._bench_quant = quant
        setattr(parent, name, new)


def quantized_linear_stats(model, quant: str) -> tuple[int, int]:
    """(weights stored quantized, elements of the largest quantized weight)."""
    if quant == "none":
        return 0, 0
    sizes = [m.in_features * m.out_features for m in model.modules() if getattr(m, "_bench_quant", None)]
    return sum(sizes), max(sizes, default=0)


class _RandomFill:
    """Fills tensors from one random block, tiled: bandwidth-bound instead of RNG-bound."""

    BLOCK = (1 << 20) + 7  # not a power of two, so rows do not line up with the block

    def __init__(self, device: str, seed: int):
        import torch

        generator = torch.Generator("cpu").manual_seed(seed)
        self.device = device
        self.base = torch.randn(self.BLOCK, generator=generator).to(device)
        self._blocks: dict[Any, Any] = {}

    def normal_(self, tensor, std: float) -> None:
        block = self._blocks.get(tensor.dtype)
        if block is None:
            block = self._blocks[tensor.dtype] = self.base.to(tensor.dtype)
        flat = tensor.view(-1)
        whole, rest = divmod(flat.numel(), self.BLOCK)
        if whole:
            flat[: whole * self.BLOCK].view(whole, self.BLOCK).copy_(block.expand(whole, self.BLOCK))
        if rest:
            flat[whole * self.BLOCK:].copy_(block[:rest])
        tensor.mul_(std)

    def q8_0_(self, out_features: int, in_features: int, std: float):
        """Q8_0 bytes of a random (out, in) weight: one quantized row pattern, tiled."""
        import gguf
        import numpy as np
        import torch

        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
        values = (self.base[: 64 * block].cpu().numpy().astype(np.float32) * std).reshape(64, block)
        pattern = torch.from_numpy(gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0).reshape(-1))
        row_bytes = in_features // block * type_size
        data = torch.empty(out_features * row_bytes, dtype=torch.uint8, device=self.device)
        pattern = pattern.to(self.device)
        whole, rest = divmod(data.numel(), pattern.numel())
        if whole:
            data[: whole * pattern.numel()].view(whole, -1).copy_(pattern.expand(whole, -1))
        if rest:
            data[whole * pattern.numel():].copy_(pattern[:rest])
        return data.view(out_features, row_bytes)


def materialize(module, device: str, dtype, seed: int = 0) -> None:
    """Allocate every meta parameter and buffer of ``module`` on ``device`` and fill it.

    Linear-like weights get N(0, 1/fan_in) (activations stay O(1) through depth), norm
    scales 1, biases and buffers 0 (BatchNorm's running variance 1). Quantized linears are
    created directly in their storage format, so the peak is the final size.
    """
    import torch

    fill = _RandomFill(device, seed)
    with torch.no_grad():
        for name, sub in module.named_modules():
            quant = getattr(sub, "_bench_quant", None)
            if quant is not None:
                _materialize_quantized(sub, quant, device, dtype, fill)
            for key, param in list(sub._parameters.items()):
                if param is None or not param.is_meta:
                    continue
                data = torch.empty(param.shape, dtype=dtype, device=device)
                if key == "weight" and param.ndim >= 2:
                    fill.normal_(data, 1.0 / math.sqrt(param[0].numel()))
                elif key == "weight":
                    data.fill_(1.0)
                else:
                    data.zero_()
                sub._parameters[key] = torch.nn.Parameter(data, requires_grad=False)
            for key, buffer in list(sub._buffers.items()):
                if buffer is None or not buffer.is_meta:
                    continue
                kind = buffer.dtype if not buffer.dtype.is_floating_point else dtype
                data = torch.zeros(buffer.shape, dtype=kind, device=device)
                if key == "running_var":
                    data.fill_(1.0)
                sub._buffers[key] = data


def _materialize_quantized(linear, quant: str, device: str, dtype, fill: _RandomFill) -> None:
    import torch

    std = 1.0 / math.sqrt(linear.in_features)
    if quant == "gguf-q8":
        import gguf
        from diffusers.quantizers.gguf.utils import GGUFParameter

        data = fill.q8_0_(linear.out_features, linear.in_features, std)
        linear.weight = GGUFParameter(data, quant_type=gguf.GGMLQuantizationType.Q8_0)
    else:
        import bitsandbytes as bnb

        weight = torch.empty(linear.out_features, linear.in_features, dtype=dtype)
        fill_cpu = _RandomFill("cpu", 0) if fill.device != "cpu" else fill
        fill_cpu.normal_(weight, std)
        # Params4bit quantizes when it is moved to the GPU.
        linear.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4").to(device)
    if linear.bias is not None and linear.bias.is_meta:
        linear.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=dtype, device=device),
                                         requires_grad=False)
