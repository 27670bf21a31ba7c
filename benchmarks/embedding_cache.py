"""3. `same` in the REPL: the second image of a prompt through the engine's embedding cache.

Round i: a fresh prompt (encoded), then the same prompt again with a new seed (what the
REPL's `same` sends). The second call's encoding time should be 0; its total is compared
with the fresh call's.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import median, summary, timed

STEPS = 4


def run(quick: bool = False, engine: Any = None) -> dict[str, Any]:
    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.request import GenerationRequest

    engine = engine or Engine.load("tiny")
    rounds = 8 if quick else 30
    fresh_total, same_total, fresh_encoding, same_encoding = [], [], [], []
    for i in range(-2, rounds):  # two warm-up rounds
        prompt = f"a green square on a white background, same-benchmark {i}"
        first = GenerationRequest.create(prompt, model=engine.spec, orientation="square", steps=STEPS, seed=i + 10)
        again = GenerationRequest.create(prompt, model=engine.spec, orientation="square", steps=STEPS, seed=i + 11)
        wall_fresh, fresh = timed(lambda: engine.generate(first)[0])
        wall_same, same = timed(lambda: engine.generate(again)[0])
        if i < 0:
            continue
        fresh_total.append(wall_fresh)
        same_total.append(wall_same)
        fresh_encoding.append(fresh.timings["encoding"])
        same_encoding.append(same.timings["encoding"])
    ratio = median(same_total) / median(fresh_total)
    max_same_encoding = max(same_encoding)
    return {
        "name": "embedding_cache",
        "fresh_total_s": summary(fresh_total),
        "same_total_s": summary(same_total),
        "fresh_encoding_s": summary(fresh_encoding),
        "same_encoding_s": summary(same_encoding),
        "same_vs_fresh_ratio": round(ratio, 4),
        "encoding_share_of_fresh": round(median(fresh_encoding) / median(fresh_total), 4),
        "rows": [("`same`: 2nd image of a prompt (64x64, 4 steps)",
                  f"encoding {max_same_encoding:.3f} s (fresh {median(fresh_encoding) * 1000:.1f} ms); "
                  f"total {ratio:.2f}x a fresh prompt", "encoding 0", max_same_encoding == 0.0)],
    }
