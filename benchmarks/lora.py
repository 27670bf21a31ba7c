"""LoRAs on tiny, whole generations: none, one unfused, three stacked unfused, one fused, and
the time to swap one LoRA for another between generations.

    python -m benchmarks.lora [--rank 8] [--rounds 12]

Everything goes through the engine as `flux2 generate --lora` and the server do (a request's
``loras``, ``LoraAdapters.apply``); the adapters are random files of the given rank on every
block linear (flux2cli/bench/lora.py), written once to a temporary folder. Cases alternate
round by round, so a background job slows each alike; medians, and ratios to no LoRA. The
real-size transformer's figures come from `flux2 bench --lora-rank R`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "a red circle on a blue background"
CASES = ("none", "one", "three", "fused")


def run(quick: bool = False, rank: int = 8, rounds: int | None = None) -> dict[str, Any]:
    from safetensors.torch import save_file

    from flux2cli.bench.lora import random_lora
    from flux2cli.lora.files import LoraCatalog
    from flux2cli.lora.refs import LoraRef
    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.request import GenerationRequest

    rounds = rounds or (3 if quick else 12)
    engine = Engine.load("tiny")
    with tempfile.TemporaryDirectory() as folder:
        for seed, name in enumerate(("a", "b", "c")):
            tensors = random_lora(engine.pipe.transformer, rank, seed)
            path = Path(folder) / f"{name}.safetensors"
            save_file({key: value.contiguous() for key, value in tensors.items()}, str(path))
        catalog = LoraCatalog(Path(folder))
        loras = {"none": [], "one": [LoraRef("a", 1.0)], "fused": [LoraRef("a", 1.0)],
                 "three": [LoraRef("a", 1.0), LoraRef("b", 0.5), LoraRef("c", -0.5)]}

        def generate(case: str) -> float:
            engine.loras.configure(catalog, fuse=case == "fused")
            request = GenerationRequest.create(PROMPT, model="tiny", seed=1, orientation="square",
                                               loras=[ref.as_json() for ref in loras[case]])
            engine.loras.apply(tuple(request.loras))  # loading and switching are not the generation's time
            start = time.perf_counter()
            engine.generate(request)
            return time.perf_counter() - start

        for case in CASES:  # warm-up: each adapter loaded once, as a long-running process has them
            generate(case)
        seconds: dict[str, list[float]] = {case: [] for case in CASES}
        for index in range(rounds):
            for case in (CASES if index % 2 == 0 else CASES[::-1]):
                seconds[case].append(generate(case))
        engine.loras.configure(catalog)
        swaps = []
        for index in range(rounds * 2):
            start = time.perf_counter()
            engine.loras.apply((LoraRef("ab"[index % 2], 1.0),))
            swaps.append(time.perf_counter() - start)
        engine.loras.unload_all()
    none = statistics.median(seconds["none"])
    return {
        "rank": rank, "rounds": rounds,
        "sec_per_image_median": {case: round(statistics.median(values), 4) for case, values in seconds.items()},
        "ratio_to_none": {case: round(statistics.median(values) / none, 3) for case, values in seconds.items()},
        "swap_ms_median": round(statistics.median(swaps) * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.rank, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
