"""What previews cost: on tiny, a generation that draws a preview at every step against one
that draws none (alternating), and each preview's time against a step's; the same with the
VAE-decode fallback instead of tiny's linear map; and on a real-size FLUX.2 VAE (random
weights, no download), the fallback's small decode and the linear map against a full decode
of a 512x512 image (a 1024x1024 decode takes minutes on two CPU cores; on a GPU the ratio
is what carries over).

    python -m benchmarks.run --only previews      (or: python -m benchmarks.previews)
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import interleave, median

PROMPT = "a yellow circle on a blue background"
STEPS = 28


def run(quick: bool = False, engine: Any = None) -> dict[str, Any]:
    import torch

    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.request import GenerationRequest

    engine = engine or Engine.load("tiny")
    rounds = 3 if quick else 9
    request = GenerationRequest.create(PROMPT, model=engine.spec, seed=5, steps=STEPS, orientation="square")
    render_s: list[float] = []

    def drawing(event) -> None:
        if event.preview is not None:
            start = time.perf_counter()
            event.preview()
            render_s.append(time.perf_counter() - start)

    every = max(1, STEPS // 6)  # what the terminal draws: console.step_progress redraws every steps//6

    def terminal(event) -> None:
        if event.preview is not None and event.step % every == 0:
            event.preview()

    linear = engine.previewer.linear
    times = interleave({"none": lambda i: engine.generate(request),
                        "linear map": lambda i: engine.generate(request, on_step=drawing),
                        "terminal": lambda i: engine.generate(request, on_step=terminal)}, rounds)
    linear_render = median(render_s)
    render_s.clear()
    engine.previewer.linear = None  # the fallback every model without a fitted map uses
    try:
        fallback_times = interleave({"none": lambda i: engine.generate(request),
                                     "vae decode": lambda i: engine.generate(request, on_step=drawing)}, rounds)
    finally:
        engine.previewer.linear = linear
    decode_render = median(render_s)
    step_s = median(times["none"]) / STEPS
    linear_share = median(times["linear map"]) / median(times["none"]) - 1
    terminal_share = median(times["terminal"]) / median(times["none"]) - 1
    decode_share = median(fallback_times["vae decode"]) / median(fallback_times["none"]) - 1

    real = _real_size_vae(torch, rounds=1 if quick else 2)
    return {
        "name": "previews",
        "tiny_step_s": round(step_s, 5),
        "tiny_linear_preview_s": round(linear_render, 5),
        "tiny_linear_share_of_generation": round(linear_share, 4),
        "tiny_terminal_share_of_generation": round(terminal_share, 4),
        "tiny_decode_preview_s": round(decode_render, 5),
        "tiny_decode_share_of_generation": round(decode_share, 4),
        "real_vae_512": real,
        "rows": [
            (f"previews as the terminal draws them, tiny 64x64, {STEPS} steps (every {every}th step)",
             f"+{terminal_share:.1%} generation time", "< 5 %", terminal_share < 0.05),
            ("a preview at every step (the worst case), same",
             f"+{linear_share:.1%} generation time; {linear_render * 1000:.2f} ms a preview = "
             f"{linear_render / step_s:.1%} of a step", "", None),
            ("same with the VAE-decode fallback",
             f"+{decode_share:.1%}; {decode_render * 1000:.2f} ms a preview", "", None),
            ("real-size FLUX.2 VAE, 512x512 image (this CPU)",
             f"preview decode {real['preview_decode_s'] * 1000:.0f} ms = {real['preview_vs_full_decode']:.1%} of "
             f"a full decode ({real['full_decode_s']:.2f} s); linear map {real['linear_map_s'] * 1000:.1f} ms",
             "", None),
        ],
    }


def _real_size_vae(torch: Any, rounds: int) -> dict[str, float]:
    """FLUX.2's own VAE architecture (AutoencoderKLFlux2's defaults), random weights."""
    from diffusers import AutoencoderKLFlux2

    from flux2cli.pipeline.preview import DECODE_SIDE

    torch.manual_seed(0)
    vae = AutoencoderKLFlux2().eval()
    channels = vae.config.latent_channels
    latents = torch.randn(1, channels, 64, 64)  # a 512x512 image
    small = torch.nn.functional.interpolate(latents, size=(DECODE_SIDE, DECODE_SIDE), mode="area")
    weights = torch.randn(3, channels)

    def timed(fn) -> float:
        fn()
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return median(samples)

    with torch.inference_mode():
        full = timed(lambda: vae.decode(latents, return_dict=False))
        preview = timed(lambda: vae.decode(small, return_dict=False))
        linear = timed(lambda: torch.einsum("rc,bchw->brhw", weights, latents))
    return {"full_decode_s": round(full, 4), "preview_decode_s": round(preview, 4), "linear_map_s": round(linear, 5),
            "preview_vs_full_decode": round(preview / full, 4)}


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in run().items() if k != "rows"}, indent=2))
