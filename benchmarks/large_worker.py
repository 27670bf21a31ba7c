"""One large-size generation in a process of its own, so its peak RSS is its own.

python -m benchmarks.large_worker WIDTH HEIGHT STEPS TILING(0|1) OUT.json IMAGE.png
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _rss_gb() -> float:
    import os

    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def main() -> None:
    width, height, steps, tiling = (int(value) for value in sys.argv[1:5])
    out, image_path = Path(sys.argv[5]), Path(sys.argv[6])

    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.request import GenerationRequest

    engine = Engine.load("tiny")
    if tiling:
        engine.pipe.vae.enable_tiling()
    vae = engine.pipe.vae
    patch = engine.pipe.vae_scale_factor * 2  # pixels per image token: VAE downsampling, then 2x2 patches
    decode_times: list[float] = []
    original_decode = vae.decode

    def timed_decode(*args, **kwargs):
        start = time.perf_counter()
        result = original_decode(*args, **kwargs)
        decode_times.append(time.perf_counter() - start)
        return result

    vae.decode = timed_decode
    # Built directly: 1344x768 is beyond the tiny model's own 4mp limit (320x192), on purpose.
    request = GenerationRequest(prompt="a red circle on a blue background", model="tiny", width=width,
                                height=height, steps=steps, seed=7)
    engine.encoder.encode(engine.embedding_key(request.prompt))  # encode outside the timing
    baseline = _rss_gb()
    start = time.perf_counter()
    result = engine.generate(request)[0]
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result.image.save(image_path)
    out.write_text(json.dumps({
        "width": width, "height": height, "steps": steps, "tiling": bool(tiling),
        "tokens": (width // patch) * (height // patch),
        "total_s": round(total, 3), "vae_decode_s": round(sum(decode_times), 3),
        "rss_after_load_gb": round(baseline, 3), "peak_rss_gb": round(peak, 3),
        "peak_above_load_gb": round(peak - baseline, 3),
    }))


if __name__ == "__main__":
    main()
