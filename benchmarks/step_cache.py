"""Step caching on tiny at 28 steps: seconds per image and scripts/eval_tiny.py's adherence
scores, without a cache and with each mode of flux2cli/pipeline/step_cache.py.

    python -m benchmarks.step_cache [--n 48]

The same cases (prompts, seeds, sizes) run for every mode; modes alternate case by case, so
a background job slows each alike. Transformer evaluations are counted per image: fewer than
the steps is the work a mode reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STEPS = 28


def run(n: int = 48, threads: int = 1) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "scripts"))
    import eval_tiny
    import tiny_data

    from flux2cli.pipeline.step_cache import MODES, step_cache

    engine = eval_tiny.load_engine(eval_tiny.DEFAULT_MODEL_DIR, threads=threads)
    cases = eval_tiny.make_cases(n, 1234)
    eval_tiny.generate_case(engine, cases[0], STEPS)  # warm-up
    scores: dict[str, list[dict]] = {mode: [] for mode in MODES}
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    evaluations: dict[str, list[int]] = {mode: [] for mode in MODES}
    for i, case in enumerate(cases):
        for mode in (MODES if i % 2 == 0 else MODES[::-1]):
            with step_cache(engine.pipe.transformer, mode) as counter:
                start = time.perf_counter()
                image = eval_tiny.generate_case(engine, case, STEPS)
                seconds[mode].append(time.perf_counter() - start)
            evaluations[mode].append(counter.evaluations)
            scores[mode].append(tiny_data.score_image(np.asarray(image.convert("RGB")), case["fg"], case["shape"],
                                                      case["bg"]))
    off = float(np.median(seconds["off"]))
    result = {"steps": STEPS, "n": n, "modes": {}}
    for mode in MODES:
        median = float(np.median(seconds[mode]))
        result["modes"][mode] = {
            "sec_per_image_median": round(median, 4),
            "speedup_vs_off": round(off / median, 2),
            "transformer_evaluations": float(np.mean(evaluations[mode])),
            **{key: round(float(np.mean([s[f"{key}_ok"] for s in scores[mode]])), 3) for key in ("bg", "fg", "shape")},
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(run(args.n, args.threads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
