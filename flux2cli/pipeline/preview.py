"""Previews: the image as it forms, from the latents after a denoising step.

The latents after step i are still mostly noise early on, so the preview shows the
model's current estimate of the finished latents instead. FLUX.2 denoises by flow
matching, x(sigma) = (1 - sigma) x0 + sigma noise, stepping along v = noise - x0; two
consecutive steps give v, and x0 = x - sigma v. That costs one subtraction per step.

Turning latents into colours, cheapest first:
- a linear map from the VAE's latent channels to RGB, fitted by least squares against
  the VAE's own decoder and stored beside the model as ``latent_rgb.json``
  (``scripts/fit_preview.py``; the tiny model ships one);
- otherwise the model's VAE decodes the latents averaged down to at most
  ``DECODE_SIDE`` latents a side: a small decode, not the full one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LINEAR_MAP_FILE = "latent_rgb.json"
MAX_SIDE = 256  # longest side of a preview, in pixels
# Latents a side for the VAE fallback (128 px at FLUX.2's 8x). benchmarks/previews.py on the real
# VAE architecture, 2 CPU cores: 0.95 s against 19 s for a full 512x512 decode (5 %); 32 a side
# cost 24 %, more than a preview is worth.
DECODE_SIDE = 16


@dataclass(frozen=True)
class LinearMap:
    """rgb = weights @ latent + bias, per latent pixel, in [-1, 1] as the VAE decodes."""

    weights: tuple[tuple[float, ...], ...]  # 3 rows of latent_channels
    bias: tuple[float, float, float]
    mean_error: float  # mean |error| against the VAE's decode, in 0-255 units, when fitted

    @classmethod
    def read(cls, folder: Path | None) -> LinearMap | None:
        path = folder / LINEAR_MAP_FILE if folder is not None else None
        if path is None or not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(tuple(tuple(row) for row in data["weights"]), tuple(data["bias"]), data["mean_error"])

    def write(self, folder: Path) -> None:
        (folder / LINEAR_MAP_FILE).write_text(json.dumps(
            {"weights": self.weights, "bias": self.bias, "mean_error": round(self.mean_error, 2)}, indent=1) + "\n")


class Previewer:
    """Small RGB previews of the first image of a batch, for one loaded pipeline."""

    def __init__(self, pipe: Any, linear: LinearMap | None = None):
        self.pipe = pipe
        self.linear = linear

    def sigmas(self) -> tuple[float, float] | None:
        """The noise levels of the latents now and one step before, read right after a step."""
        scheduler = self.pipe.scheduler
        index = getattr(scheduler, "step_index", None)
        if index is None or index < 1 or not hasattr(scheduler, "sigmas"):
            return None
        return float(scheduler.sigmas[index]), float(scheduler.sigmas[index - 1])

    def render(self, packed: Any, height: int, width: int, *, previous: Any = None,
               sigmas: tuple[float, float] | None = None) -> Any:
        """The preview (a PIL image) of the latents after a step; ``previous`` are the
        latents one step before and ``sigmas`` their noise levels, for the x0 estimate."""
        import torch

        with torch.inference_mode():
            latents = vae_latents(self.pipe, _x0(packed[:1], previous, sigmas), height, width)
            pixels = self._to_rgb(latents)[0]
        return _to_image(pixels)

    def _to_rgb(self, latents: Any) -> Any:
        import torch

        if self.linear is not None:
            weights = torch.tensor(self.linear.weights, dtype=torch.float32, device=latents.device)
            bias = torch.tensor(self.linear.bias, dtype=torch.float32, device=latents.device)
            return torch.einsum("rc,bchw->brhw", weights, latents.float()) + bias.view(1, 3, 1, 1)
        vae = self.pipe.vae
        side = max(latents.shape[-2:])
        if side > DECODE_SIDE:
            latents = torch.nn.functional.interpolate(latents.float(), scale_factor=DECODE_SIDE / side, mode="area")
        return vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0].float()


def _x0(packed: Any, previous: Any, sigmas: tuple[float, float] | None) -> Any:
    if previous is None or sigmas is None or sigmas[0] == sigmas[1]:
        return packed
    sigma, sigma_before = sigmas
    velocity = (packed - previous[:1]) / (sigma - sigma_before)
    return packed - sigma * velocity


def vae_latents(pipe: Any, packed: Any, height: int, width: int) -> Any:
    """Packed transformer latents (B, tokens, 4C) as the VAE takes them (B, C, H/s, W/s).

    The same three moves as the FLUX.2 pipelines' decode: tokens in raster order back to a
    grid, the latent batch norm undone, and the 2x2 patches unfolded.
    """
    import torch

    rows, cols = int(height) // (pipe.vae_scale_factor * 2), int(width) // (pipe.vae_scale_factor * 2)
    batch, _, channels = packed.shape
    grid = packed[:, : rows * cols].reshape(batch, rows, cols, channels).permute(0, 3, 1, 2)
    bn = pipe.vae.bn
    mean = bn.running_mean.view(1, -1, 1, 1).to(grid.device, grid.dtype)
    std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps).to(grid.device, grid.dtype)
    return pipe._unpatchify_latents(grid * std + mean)


def preview_data_url(image: Any, quality: int = 70) -> str:
    """A preview as a small WebP data URL, as the server's preview events carry it."""
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _to_image(pixels: Any) -> Any:
    """(3, h, w) in [-1, 1] -> a PIL image, enlarged (nearest) or shrunk to MAX_SIDE."""
    from PIL import Image

    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array, "RGB")
    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                            Image.Resampling.BILINEAR)
    factor = max(1, int(scale))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
