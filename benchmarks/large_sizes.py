"""5. Large sizes on the tiny model: time and peak RSS with VAE tiling on and off.

Each configuration runs in its own process (`benchmarks.large_worker`), so every peak RSS
is that configuration's alone. Sizes: the spec's 4mp landscape (320x192 for tiny, whose
size table is the spec's / 16), 672x384 (84x48 = 4032 image tokens: the real models'
token count at 1 MP, since tiny's VAE downsamples 4x where the real one does 8x) and
1344x768 (the real 1 MP pixel count: 16128 tokens, 4x the real token count).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import ROOT

STEPS = 4
SIZES = ((320, 192, "spec 4mp landscape"), (672, 384, "real 1 MP token count"), (1344, 768, "real 1 MP pixels"))


def _one(width: int, height: int, tiling: bool, folder: Path) -> tuple[dict[str, Any], np.ndarray]:
    out, image = folder / f"{width}x{height}-{int(tiling)}.json", folder / f"{width}x{height}-{int(tiling)}.png"
    subprocess.run([sys.executable, "-m", "benchmarks.large_worker", str(width), str(height), str(STEPS),
                    str(int(tiling)), str(out), str(image)], check=True, cwd=ROOT)
    with Image.open(image) as png:
        return json.loads(out.read_text()), np.asarray(png, dtype=np.int16)


def run(quick: bool = False) -> dict[str, Any]:
    sizes = SIZES[:2] if quick else SIZES
    results: dict[str, Any] = {"name": "large_sizes", "steps": STEPS, "configs": [], "rows": []}
    with tempfile.TemporaryDirectory(prefix="flux2-bench-large-") as tmp:
        for width, height, label in sizes:
            plain, plain_pixels = _one(width, height, False, Path(tmp))
            tiled, tiled_pixels = _one(width, height, True, Path(tmp))
            difference = np.abs(plain_pixels - tiled_pixels)
            entry = {"label": label, "without_tiling": plain, "with_tiling": tiled,
                     "time_ratio_tiled": round(tiled["total_s"] / plain["total_s"], 3),
                     "decode_ratio_tiled": round(tiled["vae_decode_s"] / plain["vae_decode_s"], 3),
                     "peak_rss_ratio_tiled": round(tiled["peak_rss_gb"] / plain["peak_rss_gb"], 3),
                     "pixel_mean_abs_diff": round(float(difference.mean()), 3),
                     "pixel_max_abs_diff": int(difference.max())}
            results["configs"].append(entry)
            results["rows"].append((
                f"{width}x{height} ({label}), {plain['tokens']} tokens",
                f"{plain['total_s']:.1f} s, peak RSS {plain['peak_rss_gb']:.2f} GB; tiled: "
                f"x{entry['time_ratio_tiled']:.2f} time (decode x{entry['decode_ratio_tiled']:.2f}), "
                f"x{entry['peak_rss_ratio_tiled']:.2f} RSS, pixels differ by {entry['pixel_mean_abs_diff']:.1f}/255",
                "report", None))
    return results
