"""The architectures `flux2 bench` can build, as diffusers configs (no torch needed).

Sources: diffusers 0.42's ``Flux2Transformer2DModel`` defaults are FLUX.2 [dev]'s, and
``AutoencoderKLFlux2``'s defaults are the FLUX.2 VAE (shared by every FLUX.2 model). The
klein numbers come from BFL's ``Klein4BParams``/``Klein9BParams`` as quoted by several
independent ports: klein-9b has 8 double-stream blocks (6 would give 8.2 B parameters,
8 gives the 9.0 B of its name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flux2cli.errors import InvalidRequest

TEXT_TOKENS = 512  # every FLUX.2 pipeline pads prompts to max_sequence_length=512

_FLUX2_VAE: dict[str, Any] = {}  # AutoencoderKLFlux2 defaults: 4 blocks (128-512), 32 latent channels
_TINY_VAE: dict[str, Any] = {
    "block_out_channels": (16, 32, 32, 32),  # 4 blocks: 8x down, like the real VAE
    "layers_per_block": 1,
    "latent_channels": 8,
    "norm_num_groups": 8,
    "mid_block_add_attention": False,
    "sample_size": 256,
}


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    num_layers: int  # double-stream blocks
    num_single_layers: int
    num_attention_heads: int
    joint_attention_dim: int  # 3 x the text encoder's hidden size
    guidance_embeds: bool
    attention_head_dim: int = 128
    in_channels: int = 128  # 4 x the VAE's latent channels (2x2 patches)
    mlp_ratio: float = 3.0
    timestep_guidance_channels: int = 256
    axes_dims_rope: tuple[int, ...] = (32, 32, 32, 32)
    vae: dict[str, Any] = field(default_factory=dict)  # overrides of AutoencoderKLFlux2's defaults
    nominal: str = ""  # the size the model is known by, e.g. "32B"

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def transformer_config(self, layers: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``Flux2Transformer2DModel``; ``layers`` caps both block stacks."""
        double, single = self.num_layers, self.num_single_layers
        if layers is not None:
            double, single = min(layers, double), min(layers, single)
        return {
            "patch_size": 1,
            "in_channels": self.in_channels,
            "num_layers": double,
            "num_single_layers": single,
            "attention_head_dim": self.attention_head_dim,
            "num_attention_heads": self.num_attention_heads,
            "joint_attention_dim": self.joint_attention_dim,
            "timestep_guidance_channels": self.timestep_guidance_channels,
            "mlp_ratio": self.mlp_ratio,
            "axes_dims_rope": self.axes_dims_rope,
            "guidance_embeds": self.guidance_embeds,
        }

    def vae_config(self) -> dict[str, Any]:
        return dict(self.vae)


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture(
            name="dev", nominal="32B",
            description="FLUX.2 [dev]: 8 double + 48 single blocks, 48 heads x 128, Mistral Small 3.1 text",
            num_layers=8, num_single_layers=48, num_attention_heads=48,
            joint_attention_dim=15360, guidance_embeds=True, vae=_FLUX2_VAE,
        ),
        Architecture(
            name="klein-4b", nominal="4B",
            description="FLUX.2 [klein] 4B: 5 double + 20 single blocks, 24 heads x 128, Qwen3-4B text",
            num_layers=5, num_single_layers=20, num_attention_heads=24,
            joint_attention_dim=7680, guidance_embeds=False, vae=_FLUX2_VAE,
        ),
        Architecture(
            name="klein-9b", nominal="9B",
            description="FLUX.2 [klein] 9B: 8 double + 24 single blocks, 32 heads x 128, Qwen3-8B text",
            num_layers=8, num_single_layers=24, num_attention_heads=32,
            joint_attention_dim=12288, guidance_embeds=False, vae=_FLUX2_VAE,
        ),
        Architecture(
            name="tiny-arch", nominal="1M",
            description="CI smoke preset: FLUX.2 layout at toy width (1 double + 2 single, 4 heads x 32)",
            num_layers=1, num_single_layers=2, num_attention_heads=4, attention_head_dim=32,
            joint_attention_dim=96, in_channels=32, timestep_guidance_channels=64,
            axes_dims_rope=(8, 8, 8, 8), guidance_embeds=False, vae=_TINY_VAE,
        ),
    )
}

PIXELS_PER_TOKEN = 16  # 8x VAE downsampling, then 2x2 patches


def get_arch(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name.strip().lower()]
    except KeyError:
        raise InvalidRequest(f"unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}") from None


def image_tokens(width: int, height: int) -> int:
    return (width // PIXELS_PER_TOKEN) * (height // PIXELS_PER_TOKEN)
