"""Masked editing and outpainting, for every FLUX.2 pipeline.

Why blending in the step hook and not ``Flux2KleinInpaintPipeline``: diffusers has an
inpaint pipeline only for klein, so [dev] would need this path anyway; one path for every
model means one behaviour to test, and it keeps the engine's single loaded pipeline (its
offloading, LoRAs, GGUF weights and step caching) instead of a second one. After every
step the known region of the latents is replaced by the input's own latents noised to the
level the next step expects (the RePaint/SDEdit blend); the masked region follows the
prompt and sees its surroundings. The decoded image is then composited with the input
through the feathered mask, so every pixel the mask keeps, beyond the feather, is the
input's own byte for byte.

Semantics (decisions.md): a greyscale mask, white = regenerate, black = keep, grey =
partial. Outpainting grows the canvas by ``expand`` (left, top, right, bottom; multiples of
16) and regenerates the new border plus ``OVERLAP`` pixels into the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LATENT_CELL = 16  # pixels per packed latent token of the real models (VAE 8x, then 2x2 patches)
FEATHER = 4  # the mask grows by this much and then fades over as much again: a 2*FEATHER band
OVERLAP = 8  # pixels of the input regenerated along an expanded edge, so the seam blends


def round_up(value: int, multiple: int = LATENT_CELL) -> int:
    return -(-value // multiple) * multiple


@dataclass
class Canvas:
    """What a masked edit generates on: the input placed in a grown canvas whose sides are
    multiples of 16 (``generate_size``), the mask over it, and the part that is the output."""

    image: Any  # PIL RGB, generate_size
    mask: Any  # PIL L, generate_size; 255 = regenerate
    output_size: tuple[int, int]

    @property
    def generate_size(self) -> tuple[int, int]:
        return self.image.size


def output_size(input_size: tuple[int, int], expand: tuple[int, int, int, int] | None) -> tuple[int, int]:
    left, top, right, bottom = expand or (0, 0, 0, 0)
    return input_size[0] + left + right, input_size[1] + top + bottom


def build_canvas(image: Any, mask: Any | None, expand: tuple[int, int, int, int] | None) -> Canvas:
    """``image`` (RGB) in its grown canvas; ``mask`` (L, the image's size) or none (keep all)."""
    import numpy as np
    from PIL import Image

    left, top, right, bottom = expand or (0, 0, 0, 0)
    width, height = output_size(image.size, expand)
    gen_w, gen_h = round_up(width), round_up(height)
    # Edge pixels repeated into the border: the VAE sees no hard black frame next to the
    # input, and the border is regenerated anyway.
    pixels = np.asarray(image.convert("RGB"))
    padded = np.pad(pixels, ((top, gen_h - height + bottom), (left, gen_w - width + right), (0, 0)), mode="edge")
    keep = np.full((gen_h, gen_w), 255, np.uint8)  # everything outside the input is new
    inner = np.asarray(mask, np.uint8) if mask is not None else np.zeros(image.size[::-1], np.uint8)
    inner = inner.copy()
    w, h = image.size
    overlap_w, overlap_h = min(OVERLAP, w // 4), min(OVERLAP, h // 4)
    if left:
        inner[:, :overlap_w] = 255
    if right:
        inner[:, w - overlap_w:] = 255
    if top:
        inner[:overlap_h, :] = 255
    if bottom:
        inner[h - overlap_h:, :] = 255
    keep[top:top + h, left:left + w] = inner
    # The padding up to a multiple of 16 is cut off at the end; kept, it cannot feather into
    # the input's own pixels next to it.
    keep[height:, :] = 0
    keep[:, width:] = 0
    return Canvas(Image.fromarray(padded), Image.fromarray(keep, "L"), (width, height))


def latent_mask(mask: Any, torch_like: Any, cell: int = LATENT_CELL) -> Any:
    """The mask on the packed token grid, (1, tokens, 1) in 0..1: a token is as regenerated
    as its most regenerated pixel, so the generated area always covers the painted one."""
    import numpy as np
    import torch

    values = np.asarray(mask, np.float32) / 255.0
    gh, gw = values.shape[0] // cell, values.shape[1] // cell
    cells = values[:gh * cell, :gw * cell].reshape(gh, cell, gw, cell).max(axis=(1, 3))
    return torch.from_numpy(cells.reshape(1, gh * gw, 1)).to(device=torch_like.device, dtype=torch_like.dtype)


class LatentBlend:
    """Called from the engine's step hook: the known region back at the current noise level."""

    def __init__(self, pipe: Any, clean: Any, noise: Any, mask: Any):
        self.pipe = pipe
        self.known = pipe._pack_latents(clean)  # (1, tokens, channels)
        self.noise = pipe._pack_latents(noise)  # (batch, tokens, channels), the run's own noise
        self.mask = latent_mask(mask, self.known, pipe.vae_scale_factor * 2)

    def __call__(self, latents: Any, index: int) -> Any:
        # After step ``index`` the latents sit at the next sigma of the schedule the pipeline
        # runs (the shifted tail when strength < 1); the last one is 0, the clean latents.
        sigma = float(self.pipe.scheduler.sigmas[index + 1])
        known = sigma * self.noise + (1.0 - sigma) * self.known
        return self.mask * latents + (1.0 - self.mask) * known.to(latents.dtype)


def feathered(mask: Any) -> Any:
    """The mask grown by FEATHER pixels and then softened over FEATHER more: 0 (the input's
    own pixels) beyond 2*FEATHER of any regenerated pixel, 255 on and inside the painted area."""
    from PIL import ImageFilter

    return mask.filter(ImageFilter.MaxFilter(2 * FEATHER + 1)).filter(ImageFilter.BoxBlur(FEATHER))


def composite(generated: Any, canvas: Canvas) -> Any:
    """The decoded image over the canvas through the feathered mask, cut to the output size."""
    import numpy as np
    from PIL import Image

    weight = np.asarray(feathered(canvas.mask), np.float32)[..., None] / 255.0
    ours = np.asarray(canvas.image, np.float32)
    theirs = np.asarray(generated.convert("RGB").resize(canvas.generate_size), np.float32)
    mixed = np.where(weight == 0, ours, np.rint(ours + (theirs - ours) * weight))
    width, height = canvas.output_size
    return Image.fromarray(mixed.astype(np.uint8)[:height, :width], "RGB")


class MaskedEdit:
    """One masked edit or outpainting run: the engine asks it for the pipeline's start, calls
    ``blend`` from its step hook and ``finish`` on the decoded images."""

    def __init__(self, pipe: Any, request: Any, generators: list[Any]):
        from flux2cli.pipeline.img2img import sdedit_start

        first = request.reference_images[0].image
        mask = request.mask.image if request.mask is not None else None
        self.canvas = build_canvas(first, mask, request.expand)
        self.width, self.height = self.canvas.generate_size
        # strength 1.0 starts from the noise alone (sigma 1), exactly as the pipeline would.
        start = sdedit_start(pipe, self.canvas.image, width=self.width, height=self.height, steps=request.steps,
                             strength=request.strength, generators=generators)
        self.kwargs = {"latents": start.latents, "sigmas": start.sigmas}
        self.steps_run = start.steps_run
        self.blend = LatentBlend(pipe, start.clean, start.noise, self.canvas.mask)

    def finish(self, images: list[Any]) -> list[Any]:
        return [composite(image, self.canvas) for image in images]
