#!/usr/bin/env python
"""Evaluate the embedded ``tiny`` model: does it draw what the prompt asks?

Generates N images over random (seeded) prompts, seeds and resolutions through the public
engine (``flux2cli.pipeline.engine.Engine``, as ``flux2 generate`` runs them) and scores them with ``tiny_data.score_image``:

- background colour: majority nearest-palette colour of a 2-pixel border ring;
- foreground colour: majority nearest-palette colour of the pixels whose nearest colour is
  not the background;
- shape: bounding-box fill ratio of the largest connected region of pixels closer to the
  detected foreground than to the detected background (square ~1, circle ~0.785,
  triangle ~0.5; thresholds halfway between).

Prints the three accuracies and the seconds per image (per resolution, and for 64x64).

    python scripts/eval_tiny.py --n 96 --model-dir flux2cli/models/tiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# see train_tiny.py: spinning OpenMP threads are very slow on a shared 2-core box
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_data  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO / "flux2cli" / "models" / "tiny"


def make_cases(n: int, seed: int) -> list[dict]:
    """Balanced over resolutions; prompts and generation seeds drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    combos = tiny_data.all_combos()
    cases = []
    for i in range(n):
        w, h = tiny_data.RESOLUTIONS[i % len(tiny_data.RESOLUTIONS)]
        fg, shape, bg = combos[int(rng.integers(len(combos)))]
        cases.append(
            dict(fg=fg, shape=shape, bg=bg, width=w, height=h, seed=int(rng.integers(0, 2**31 - 1)),
                 prompt=tiny_data.make_prompt(fg, shape, bg))
        )
    return cases


def load_engine(model_dir, threads=2):
    """The public engine on the ``tiny`` registry entry, pointed at ``model_dir``."""
    import dataclasses

    import torch

    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.registry import get_model

    torch.set_num_threads(threads)
    return Engine.load(dataclasses.replace(get_model("tiny"), local_dir=Path(model_dir)))


def generate_case(engine, case: dict, steps: int):
    """One case through the engine, as `flux2 generate` would run it."""
    from flux2cli.pipeline.request import GenerationRequest

    request = GenerationRequest.create(case["prompt"], model=engine.spec, width=case["width"],
                                       height=case["height"], steps=steps, seed=case["seed"])
    return engine.generate(request)[0].image


def score_cases(engine, cases: list[dict], steps: int, save_dir=None, verbose=False) -> tuple[dict, list[dict]]:
    generate_case(engine, cases[0], steps)  # warm-up: the first call pays one-off costs
    results, times = [], {}
    for i, c in enumerate(cases):
        t0 = time.perf_counter()
        img = generate_case(engine, c, steps)
        dt = time.perf_counter() - t0
        times.setdefault(f"{c['width']}x{c['height']}", []).append(dt)
        r = tiny_data.score_image(np.asarray(img.convert("RGB")), c["fg"], c["shape"], c["bg"])
        results.append({"case": c, **r})
        if save_dir is not None:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            ok = "".join("x."[int(r[k])] for k in ("bg_ok", "fg_ok", "shape_ok"))
            img.save(Path(save_dir) / f"{i:03d}_{c['fg']}_{c['shape']}_{c['bg']}_{ok}.png")
        if verbose:
            print(f"{i:3d} {c['prompt']:45s} {c['width']}x{c['height']} -> bg={r['bg']} fg={r['fg']} "
                  f"shape={r['shape']} ({dt:.2f}s)", flush=True)
    summary = {
        "n": len(cases),
        "steps": steps,
        "background_acc": float(np.mean([r["bg_ok"] for r in results])),
        "foreground_acc": float(np.mean([r["fg_ok"] for r in results])),
        "shape_acc": float(np.mean([r["shape_ok"] for r in results])),
        "sec_per_image": float(np.mean([t for v in times.values() for t in v])),
        "sec_per_image_by_res": {k: float(np.mean(v)) for k, v in times.items()},
        "shape_acc_by_true_shape": {
            s: float(np.mean([r["shape_ok"] for r in results if r["case"]["shape"] == s] or [np.nan]))
            for s in tiny_data.SHAPES
        },
    }
    return summary, results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--steps", type=int, default=None, help="default: the registry's default for tiny")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-dir", default=None, help="write the generated images here")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    engine = load_engine(args.model_dir, args.threads)
    steps = args.steps or engine.spec.default_steps
    summary, _ = score_cases(engine, make_cases(args.n, args.seed), steps, args.save_dir, args.verbose)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"model: {args.model_dir}  n={summary['n']}  steps={summary['steps']}")
        print(f"background colour accuracy: {summary['background_acc']:.3f}")
        print(f"foreground colour accuracy: {summary['foreground_acc']:.3f}")
        print(f"shape accuracy:             {summary['shape_acc']:.3f}  by shape {summary['shape_acc_by_true_shape']}")
        print(f"seconds per image:          {summary['sec_per_image']:.3f}  {summary['sec_per_image_by_res']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
