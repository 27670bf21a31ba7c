"""Fit the latent-to-RGB map of a model's previews (flux2cli/pipeline/preview.py) by least squares.

The VAE encodes images of the tiny model's own kind (coloured shapes, scripts/tiny_data.py,
at every size it draws), its decoder decodes them again, and the map is fitted from each
latent pixel to the mean colour of the decoded pixels it covers: previews then show what
the decoder would, at a fraction of its cost. Writes latent_rgb.json into the model folder.

    python scripts/fit_preview.py                      # the tiny model, 256 images
    python scripts/fit_preview.py --model-dir PATH --images 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_data  # noqa: E402

from flux2cli.pipeline.preview import LinearMap  # noqa: E402

SIZES = ((64, 64), (80, 48), (48, 80), (128, 128))


def fit(model_dir: Path, images: int, seed: int = 0) -> LinearMap:
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2.from_pretrained(model_dir / "vae").eval()
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    rng = np.random.default_rng(seed)
    latents, colours = [], []
    with torch.inference_mode():
        for index in range(images):
            width, height = SIZES[index % len(SIZES)]
            fg, bg = rng.choice(tiny_data.COLOR_NAMES, 2, replace=False)
            shape = rng.choice(list(tiny_data.SHAPE_FILL))
            pixels = tiny_data.sample_image(rng, fg, shape, bg, width, height)  # (h, w, 3) 0-255
            image = torch.from_numpy(np.asarray(pixels, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
            latent = vae.encode(image).latent_dist.mode()
            decoded = vae.decode(latent, return_dict=False)[0].clamp(-1, 1)
            pooled = torch.nn.functional.avg_pool2d(decoded, scale)
            latents.append(latent[0].flatten(1).T)
            colours.append(pooled[0].flatten(1).T)
    x = torch.cat(latents).double()
    y = torch.cat(colours).double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution  # (channels + 1, 3)
    error = ((design @ solution).clamp(-1, 1) - y).abs().mean().item() * 127.5
    weights = tuple(tuple(float(v) for v in row) for row in solution[:-1].T)
    return LinearMap(weights, tuple(float(v) for v in solution[-1]), error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path(__file__).resolve().parent.parent / "flux2cli/models/tiny")
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    linear = fit(args.model_dir, args.images)
    linear.write(args.model_dir)
    print(f"wrote {args.model_dir / 'latent_rgb.json'}: mean error {linear.mean_error:.1f} / 255 per channel")


if __name__ == "__main__":
    main()
