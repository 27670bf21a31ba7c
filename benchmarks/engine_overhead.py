"""2. Engine overhead: `Engine.generate` against the same diffusers pipeline called directly.

Same loaded pipeline object, prompt, seed, steps and size; every round uses a new prompt
so both sides encode it (the engine's embedding cache would otherwise skip encoding and
win unfairly). Pixels must be identical; the time ratio compares medians of interleaved
runs (A B, B A, ...), so background load hits both sides alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import interleave, median, summary

TARGET_RATIO = 1.03
STEPS = 4
SIZES = (("square", "1mp"), ("landscape", "4mp"))  # tiny: 64x64 and 320x192


def run(quick: bool = False, engine: Any = None) -> dict[str, Any]:
    import torch

    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.request import GenerationRequest

    engine = engine or Engine.load("tiny")
    pipe, spec = engine.pipe, engine.spec
    results: dict[str, Any] = {"name": "engine_overhead", "steps": STEPS, "sizes": {}, "rows": []}
    rounds = 8 if quick else 30
    for orientation, size in SIZES:
        requests = {}
        images: dict[str, dict[int, Any]] = {"engine": {}, "diffusers": {}}

        def request_for(i: int) -> GenerationRequest:
            if i not in requests:
                requests[i] = GenerationRequest.create(
                    f"a red circle on a blue background, take {orientation} {size} {i}", model=spec,
                    orientation=orientation, size=size, steps=STEPS, seed=1000 + i)
            return requests[i]

        def ours(i: int) -> None:
            images["engine"][i] = engine.generate(request_for(i))[0].image

        def theirs(i: int) -> None:
            request = request_for(i)
            images["diffusers"][i] = pipe(
                prompt=request.prompt, height=request.height, width=request.width,
                num_inference_steps=request.steps, guidance_scale=1.0,
                generator=torch.Generator("cpu").manual_seed(request.seed),
                max_sequence_length=spec.max_sequence_length,
                text_encoder_out_layers=spec.text_encoder_out_layers, output_type="pil",
            ).images[0]

        times = interleave({"engine": ours, "diffusers": theirs}, rounds=rounds, warmup=2)
        identical = all(np.array_equal(np.asarray(images["engine"][i]), np.asarray(images["diffusers"][i]))
                        for i in range(rounds))
        ratio = median(times["engine"]) / median(times["diffusers"])
        request = request_for(0)
        label = f"{request.width}x{request.height}"
        results["sizes"][label] = {
            "engine_s": summary(times["engine"]), "diffusers_s": summary(times["diffusers"]),
            "ratio": round(ratio, 4), "pixels_identical": identical,
            # Ratio of per-round pairs: less sensitive to slow drift than the ratio of medians.
            "paired_ratio_median": round(median([a / b for a, b in zip(times["engine"], times["diffusers"])]), 4),
        }
        results["rows"].append((f"engine vs diffusers, {label}, {STEPS} steps",
                                f"ratio {ratio:.3f} (medians {median(times['engine']) * 1000:.1f} / "
                                f"{median(times['diffusers']) * 1000:.1f} ms), pixels "
                                + ("identical" if identical else "DIFFER"),
                                f"<= {TARGET_RATIO}, identical", ratio <= TARGET_RATIO and identical))
    return results
