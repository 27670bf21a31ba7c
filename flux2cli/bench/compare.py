"""`flux2 bench --cache MODE` and `--decoder small`: the same work with and without, in one run.

A step cache decides from how the transformer's input moves between steps, so timing the
same input over and over (as ``timing.time_passes`` does) would make every step look
cacheable. Here the transformer runs a real Euler loop instead: the latents move by the
prediction and the timestep walks down a schedule, plainly and then under
``pipeline.step_cache``. Random weights make First Block Cache's skips arbitrary (its
threshold reads the model's own residuals); TaylorSeer's schedule of full steps is fixed,
so its ratio is the one a real model gets, less the forecast's own cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flux2cli.bench.timing import sync

# BFL's FLUX.2-small-decoder narrows the decoder's channels to 3/4, (128, 256, 512, 512) to
# (96, 192, 384, 384); the rest of the VAE is FLUX.2's.
SMALL_DECODER_SHARE = 0.75


def small_decoder_channels(vae_config: dict[str, Any]) -> tuple[int, ...]:
    groups = vae_config.get("norm_num_groups", 32)  # AutoencoderKLFlux2's defaults: the real VAE's
    return tuple(max(groups, round(c * SMALL_DECODER_SHARE / groups) * groups)
                 for c in vae_config.get("block_out_channels", (128, 256, 512, 512)))


@dataclass(frozen=True)
class CacheComparison:
    mode: str
    steps: int
    full_evaluations: int
    plain_s: float
    cached_s: float


@dataclass(frozen=True)
class DecoderComparison:
    full_s: float
    small_s: float
    small_params: int


def denoising_loop(transformer: Any, inputs: dict[str, Any], steps: int, device: str) -> float:
    """Seconds for ``steps`` Euler steps from the inputs' latents (t from 1 to 0)."""
    import torch

    latents = inputs["hidden_states"].clone()
    batch = latents.shape[0]
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for index in range(steps):
            timestep = torch.full((batch,), float(sigmas[index]), device=latents.device, dtype=latents.dtype)
            with transformer.cache_context("bench"):  # as the pipelines name theirs; caches need one
                prediction = transformer(**{**inputs, "hidden_states": latents, "timestep": timestep})[0]
            latents = latents + (sigmas[index + 1] - sigmas[index]).item() * prediction
    sync(device)
    return time.perf_counter() - start


def compare_cache(transformer: Any, inputs: dict[str, Any], mode: str, steps: int, device: str) -> CacheComparison:
    from flux2cli.pipeline.step_cache import step_cache

    plain = denoising_loop(transformer, inputs, steps, device)
    with step_cache(transformer, mode) as counter:
        cached = denoising_loop(transformer, inputs, steps, device)
    return CacheComparison(mode, steps, counter.evaluations, round(plain, 4), round(cached, 4))


def compare_decoder(vae: Any, vae_config: dict[str, Any], latents: Any, device: str, dtype: Any,
                    seed: int) -> DecoderComparison:
    """Decode the same latents with the FLUX.2 VAE and one built with the small decoder's channels."""
    import torch
    from diffusers import AutoencoderKLFlux2

    from flux2cli.bench import weights

    with torch.device("meta"):
        small = AutoencoderKLFlux2(**{**vae_config, "decoder_block_out_channels": small_decoder_channels(vae_config)})
    small.eval().requires_grad_(False)
    weights.materialize(small, device, dtype, seed)

    def decode(model: Any) -> float:
        with torch.inference_mode():
            model.decode(latents)  # warm-up: allocator, kernels
            sync(device)
            start = time.perf_counter()
            model.decode(latents)
            sync(device)
            return time.perf_counter() - start

    full_s, small_s = decode(vae), decode(small)
    params = sum(p.numel() for p in small.decoder.parameters())
    del small
    return DecoderComparison(round(full_s, 4), round(small_s, 4), params)
