"""Analytic FLOP count of one ``Flux2Transformer2DModel`` forward pass.

Counts what a FLOP counter counts: 2·m·n·k per matrix product (every ``nn.Linear`` and
the two products of attention, QKᵀ and AV). Norms, RoPE, activations, softmax and the
modulation arithmetic are O(tokens·dim) and left out (< 1 % at real sizes). A sampling
step is one forward pass: [dev] is guidance-distilled and klein is step-distilled, so
neither runs classifier-free guidance's second pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class FlopCount:
    linear: int  # projections, MLPs, embedders
    attention: int  # QK^T and AV
    image_tokens: int
    text_tokens: int
    batch: int

    @property
    def total(self) -> int:
        return self.linear + self.attention


def transformer_flops(config: Mapping[str, Any], image_tokens: int, text_tokens: int, batch: int = 1) -> FlopCount:
    """FLOPs of one forward pass for a ``Flux2Transformer2DModel`` config (its keyword arguments)."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    mlp = int(d * config.get("mlp_ratio", 3.0))
    c_in = config["in_channels"]
    patch = config.get("patch_size", 1)
    c_out = patch * patch * (config.get("out_channels") or c_in)
    t_ch = config.get("timestep_guidance_channels", 256)
    n, l, b = image_tokens, text_tokens, batch
    s = n + l
    blocks = config["num_layers"] + config["num_single_layers"]

    # Per-sample vector work: timestep (and guidance) embedders, the three modulation
    # layers (6d + 6d + 3d outputs) and norm_out's 2d modulation.
    embedders = 2 if config.get("guidance_embeds", True) else 1
    vectors = embedders * (t_ch * d + d * d) + d * (6 * d + 6 * d + 3 * d) + d * 2 * d
    # Token work outside the blocks: x_embedder, context_embedder, proj_out.
    io = n * c_in * d + l * config["joint_attention_dim"] * d + n * d * c_out
    # Each block, double-stream or single-stream, projects every token through 4·d² of
    # attention weights (q, k, v, out) and 3·d·mlp of SwiGLU MLP (2·mlp in, mlp out).
    per_block = s * (4 * d * d + 3 * d * mlp)
    linear = 2 * b * (vectors + io + blocks * per_block)
    attention = 2 * 2 * b * blocks * s * s * d  # QK^T and AV over all heads
    return FlopCount(linear=linear, attention=attention, image_tokens=n, text_tokens=l, batch=b)


def transformer_params(config: Mapping[str, Any]) -> int:
    """Parameter count of a ``Flux2Transformer2DModel`` config, without building it."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    hd = config["attention_head_dim"]
    mlp = int(d * config.get("mlp_ratio", 3.0))
    c_in = config["in_channels"]
    patch = config.get("patch_size", 1)
    c_out = patch * patch * (config.get("out_channels") or c_in)
    t_ch = config.get("timestep_guidance_channels", 256)
    embedders = 2 if config.get("guidance_embeds", True) else 1
    # Double blocks also hold QK-norm weights for both streams (4·hd); single blocks 2·hd.
    double = 4 * d * d + 4 * d * d + 2 * 3 * d * mlp + 4 * hd
    single = d * (3 * d + 2 * mlp) + (d + mlp) * d + 2 * hd
    return (embedders * (t_ch * d + d * d) + 15 * d * d + c_in * d + config["joint_attention_dim"] * d
            + config["num_layers"] * double + config["num_single_layers"] * single
            + 2 * d * d + d * c_out)
