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

``--lora`` loads a LoRA (a shipped name or a file) for every image; ``--prompts new`` draws
the prompts from those naming at least one of ``tiny_data.NEW_COLOURS`` (what the shipped
``tiny-colours`` LoRA teaches), and then also reports the foreground accuracy of the cases
whose foreground is new and the background accuracy of those whose background is. With a
LoRA or new prompts, pixels are classified among all eleven colours (``EXTENDED_NAMES``), so
a base colour drawn pink counts as wrong; otherwise among the base eight, as the README's
table was measured.

    python scripts/eval_tiny.py --n 96 --model-dir flux2cli/models/tiny
    python scripts/eval_tiny.py --n 60 --prompts new --lora tiny-colours
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


def prompt_combos(prompts: str) -> list[tuple[str, str, str]]:
    """``base``: the 168 prompts of the base eight colours; ``new``: those of the eleven that
    name a new colour as foreground or background."""
    if prompts == "base":
        return tiny_data.all_combos()
    return [c for c in tiny_data.all_combos(tiny_data.EXTENDED_NAMES)
            if c[0] in tiny_data.NEW_COLOURS or c[2] in tiny_data.NEW_COLOURS]


def make_cases(n: int, seed: int, prompts: str = "base") -> list[dict]:
    """Balanced over resolutions; prompts and generation seeds drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    combos = prompt_combos(prompts)
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


def generate_case(engine, case: dict, steps: int, lora: str | None = None):
    """One case through the engine, as `flux2 generate` would run it (``--lora``: a catalog name)."""
    from flux2cli.pipeline.request import GenerationRequest

    request = GenerationRequest.create(case["prompt"], model=engine.spec, width=case["width"],
                                       height=case["height"], steps=steps, seed=case["seed"],
                                       loras=[{"name": lora}] if lora else [])
    return engine.generate(request)[0].image


def add_lora(engine, source: str) -> str:
    """Make a shipped name or a file available to the engine; returns the name requests use."""
    return engine.loras.catalog.add(source).name


def score_cases(engine, cases: list[dict], steps: int, save_dir=None, verbose=False, lora: str | None = None,
                colours: list[str] = tiny_data.COLOR_NAMES) -> tuple[dict, list[dict]]:
    generate_case(engine, cases[0], steps, lora)  # warm-up: the first call pays one-off costs
    results, times = [], {}
    for i, c in enumerate(cases):
        t0 = time.perf_counter()
        img = generate_case(engine, c, steps, lora)
        dt = time.perf_counter() - t0
        times.setdefault(f"{c['width']}x{c['height']}", []).append(dt)
        r = tiny_data.score_image(np.asarray(img.convert("RGB")), c["fg"], c["shape"], c["bg"], colours)
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
    new_fg = [r["fg_ok"] for r in results if r["case"]["fg"] in tiny_data.NEW_COLOURS]
    new_bg = [r["bg_ok"] for r in results if r["case"]["bg"] in tiny_data.NEW_COLOURS]
    if new_fg or new_bg:
        summary["foreground_acc_new"] = float(np.mean(new_fg)) if new_fg else None
        summary["background_acc_new"] = float(np.mean(new_bg)) if new_bg else None
    return summary, results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--steps", type=int, default=None, help="default: the registry's default for tiny")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", choices=["base", "new"], default="base",
                    help="base: the eight colours' prompts; new: prompts naming pink, cyan or brown")
    ap.add_argument("--lora", default=None, help="a LoRA for every image: a shipped name (tiny-colours) or a file")
    ap.add_argument("--save-dir", default=None, help="write the generated images here")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    engine = load_engine(args.model_dir, args.threads)
    steps = args.steps or engine.spec.default_steps
    lora = add_lora(engine, args.lora) if args.lora else None
    colours = tiny_data.EXTENDED_NAMES if lora or args.prompts == "new" else tiny_data.COLOR_NAMES
    summary, _ = score_cases(engine, make_cases(args.n, args.seed, args.prompts), steps, args.save_dir,
                             args.verbose, lora, colours)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"model: {args.model_dir}  n={summary['n']}  steps={summary['steps']}  prompts={args.prompts}  "
              f"lora={args.lora}  scored among {len(colours)} colours")
        print(f"background colour accuracy: {summary['background_acc']:.3f}")
        print(f"foreground colour accuracy: {summary['foreground_acc']:.3f}")
        print(f"shape accuracy:             {summary['shape_acc']:.3f}  by shape {summary['shape_acc_by_true_shape']}")
        if "foreground_acc_new" in summary:
            print(f"new-colour foreground / background accuracy: {summary['foreground_acc_new']} / "
                  f"{summary['background_acc_new']}")
        print(f"seconds per image:          {summary['sec_per_image']:.3f}  {summary['sec_per_image_by_res']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
