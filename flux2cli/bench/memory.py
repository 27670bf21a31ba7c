"""How much memory a benchmark run needs, estimated before anything is allocated."""

from __future__ import annotations

from dataclasses import dataclass

from flux2cli.errors import InvalidRequest

GB = 1024**3
DTYPE_BYTES = {"bf16": 2, "fp32": 4}
# Bytes per quantized weight: Q8_0 stores 32 int8 + one fp16 scale per block of 32;
# bitsandbytes NF4 stores 4 bits + one fp32 absmax per block of 64.
QUANT_BYTES = {"gguf-q8": 34 / 32, "nf4": 0.5 + 4 / 64}
# Live tensors inside a single-stream block, in units of tokens x inner dim: the fused
# qkv+mlp projection (3d + 2·mlp = 9d), q/k/v after norm and RoPE, the SwiGLU output (3d),
# the concatenated attention+mlp (4d) and the residual stream. Attention itself is
# flash/memory-efficient SDPA (no tokens² matrix) on CUDA and on CPU.
ACTIVATION_FACTOR = 24
VAE_ACTIVATION_FACTOR = 8  # full-resolution decoder maps alive at once (channels x pixels)


class DoesNotFit(InvalidRequest):
    """The requested benchmark would not fit in the device's memory."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float  # bytes
    activations: float
    vae: float
    headroom: float

    @property
    def total(self) -> float:
        return self.weights + self.activations + self.vae + self.headroom

    def as_gb(self) -> dict[str, float]:
        return {name: round(value / GB, 2) for name, value in (
            ("total", self.total), ("weights", self.weights), ("activations", self.activations),
            ("vae", self.vae), ("headroom", self.headroom))}


def estimate_memory(
    *,
    params: int,
    quantized_params: int,
    largest_linear: int,
    inner_dim: int,
    joint_attention_dim: int,
    in_channels: int,
    image_tokens: int,
    text_tokens: int,
    batch: int,
    dtype: str,
    quant: str,
    vae_params: int,
    vae_pixels: int,
    vae_channels: int,
    device_type: str,
) -> MemoryEstimate:
    """Peak bytes of a run: weights + activations of one forward + the VAE decode + headroom.

    ``quantized_params`` of ``params`` are stored at the quantized size; a quantized linear
    is dequantized to ``dtype`` when it runs, so the largest one is counted again, twice.
    """
    act = DTYPE_BYTES[dtype]
    weights = float(params * act)
    transient = 0.0
    if quant != "none":
        weights = (params - quantized_params) * act + quantized_params * QUANT_BYTES[quant]
        transient = 2 * largest_linear * act
    tokens = image_tokens + text_tokens
    activations = batch * act * (ACTIVATION_FACTOR * tokens * inner_dim
                                 + text_tokens * joint_attention_dim + 4 * image_tokens * in_channels)
    vae = vae_params * act + batch * vae_pixels * vae_channels * act * VAE_ACTIVATION_FACTOR
    subtotal = weights + activations + transient + vae
    # The caching allocator's fragmentation and cuBLAS/cuDNN workspaces, or the CPU
    # allocator's slack: 10 % plus a fixed amount.
    headroom = 0.10 * subtotal + (0.5 if device_type == "cuda" else 0.25) * GB
    return MemoryEstimate(weights=weights, activations=activations + transient, vae=vae, headroom=headroom)
