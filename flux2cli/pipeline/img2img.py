"""Strength below 1.0 for FLUX.2: start denoising from the reference's noised latents.

diffusers has no FLUX.2 img2img pipeline, but the stock pipelines accept ``latents=``
(packed-ready, batch-norm-normalised) and ``sigmas=``, which is all SDEdit needs. The
start level must come from the scheduler's *shifted* schedule: FLUX.2 shifts time by the
image's sequence length, and the unshifted value would be far off.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from flux2cli.errors import GenerationError


@dataclass
class SDEditStart:
    latents: Any  # (batch, 4*C, h, w), what the pipeline's prepare_latents accepts
    sigmas: list[float]  # unshifted sigmas of the steps still to run
    steps_run: int
    start_sigma: float  # the shifted noise level the run starts from
    clean: Any = None  # (1, 4*C, h, w): the reference's own latents (masked edits blend them back in)
    noise: Any = None  # (batch, 4*C, h, w): the noise the run started from


def steps_to_run(steps: int, strength: float) -> int:
    """The diffusers img2img convention: ``strength`` is the share of steps re-run."""
    start = int(max(steps - steps * strength, 0))
    return steps - start


# The FLUX.2 image processor refuses references with a side under 64 px.
MIN_REFERENCE_SIDE = 64


def fit_reference(image: Any, max_pixels: int) -> Any:
    """Scale ``image`` to at most ``max_pixels`` (but each side at least 64 px), aspect kept."""
    width, height = image.size
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    scale = max(scale, MIN_REFERENCE_SIDE / min(width, height))
    if scale == 1.0:
        return image
    from PIL import Image

    size = (max(MIN_REFERENCE_SIDE, round(width * scale)), max(MIN_REFERENCE_SIDE, round(height * scale)))
    return image.resize(size, Image.LANCZOS)


def sdedit_start(pipe: Any, reference: Any, *, width: int, height: int, steps: int, strength: float,
                 generators: list[Any]) -> SDEditStart:
    import numpy as np
    import torch
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu
    from diffusers.utils.torch_utils import randn_tensor

    run = steps_to_run(steps, strength)
    first = steps - run
    unshifted = np.linspace(1.0, 1 / steps, steps)
    latent_h = 2 * (height // (pipe.vae_scale_factor * 2))
    latent_w = 2 * (width // (pipe.vae_scale_factor * 2))
    mu = compute_empirical_mu(image_seq_len=(latent_h // 2) * (latent_w // 2), num_steps=steps)

    # The pipeline shifts whatever sigmas it is given with the same mu; check that the tail
    # we hand it lands exactly on the tail of the full shifted schedule.
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(sigmas=unshifted, mu=mu)
    full = scheduler.sigmas[:-1].clone()
    scheduler.set_timesteps(sigmas=unshifted[first:], mu=mu)
    if not torch.allclose(scheduler.sigmas[:-1], full[first:], atol=1e-6):
        raise GenerationError("this model's scheduler cannot start part-way; use strength 1.0")
    start_sigma = float(full[first])

    device = pipe._execution_device
    pixels = pipe.image_processor.preprocess(reference, height=height, width=width, resize_mode="crop")
    clean = pipe._encode_vae_image(pixels.to(device=device, dtype=pipe.vae.dtype), generator=None)
    # One draw per generator, exactly as prepare_latents draws for a list of generators.
    noise = torch.cat([randn_tensor(clean.shape, generator=g, device=device, dtype=clean.dtype)
                       for g in generators])
    latents = start_sigma * noise + (1.0 - start_sigma) * clean
    return SDEditStart(latents, unshifted[first:].tolist(), run, start_sigma, clean, noise)
