#!/usr/bin/env python
"""Draw the README's pictures with the embedded tiny model, through the public engine.

    python scripts/make_readme_images.py            # writes docs/images/tiny-grid.png, strength.png, mask.png, lora.png
    python scripts/make_readme_images.py mask       # only the named pictures

Seeded: the same weights give the same pictures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_data  # noqa: E402

from flux2cli.pipeline.engine import Engine  # noqa: E402
from flux2cli.pipeline.request import GenerationRequest, MaskImage, ReferenceImage  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"
SCALE = 3  # 64 px is too small to see on a page; nearest-neighbour keeps the pixels honest
GAP = 6
BACKDROP = (24, 24, 28)
TEXT = (220, 220, 225)


def draw(engine: Engine, prompt: str, orientation: str, seed: int, **extra) -> Image.Image:
    request = GenerationRequest.create(prompt, model=engine.spec, orientation=orientation, seed=seed, **extra)
    return engine.generate(request)[0].image


def big(image: Image.Image) -> Image.Image:
    return image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)


def grid(engine: Engine) -> Image.Image:
    """Each shape in each orientation, colours varied."""
    colours = tiny_data.COLOR_NAMES
    rows = []
    for r, shape in enumerate(tiny_data.SHAPES):
        row = []
        for c, orientation in enumerate(("square", "landscape", "portrait") * 2):
            fg, bg = colours[(r * 6 + c) % 8], colours[(r * 6 + c * 3 + 5) % 8]
            if fg == bg:
                bg = colours[(colours.index(bg) + 1) % 8]
            row.append(big(draw(engine, tiny_data.make_prompt(fg, shape, bg), orientation, seed=r * 10 + c)))
        rows.append(row)
    cell = 80 * SCALE
    sheet = Image.new("RGB", (6 * (cell + GAP) + GAP, 3 * (cell + GAP) + GAP), BACKDROP)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            x = GAP + c * (cell + GAP) + (cell - image.width) // 2
            y = GAP + r * (cell + GAP) + (cell - image.height) // 2
            sheet.paste(image, (x, y))
    return sheet


def strength_strip(engine: Engine) -> Image.Image:
    """A reference, then one prompt at four strengths (25 steps): low keeps the input, 1.0 follows
    the prompt. FLUX.2's shifted schedule keeps the noise high for most steps, so the input
    survives only at low strengths."""
    reference = draw(engine, "a red square on a blue background", "square", seed=5)
    prompt = "a yellow circle on a green background"
    panels = [("reference", reference)]
    for strength in (0.1, 0.2, 0.5, 1.0):
        image = draw(engine, prompt, "square", seed=5, strength=strength, steps=25,
                     reference_images=[ReferenceImage("reference.png", reference)])
        panels.append((f"strength {strength}", image))
    return strip(panels)


def mask_strip(engine: Engine) -> Image.Image:
    """Before, the mask (white = regenerate), after: the painted right half takes the prompt's
    colours and the left half comes back exactly as it was."""
    before = draw(engine, "a red square on a blue background", "square", seed=5)
    mask = Image.new("L", before.size, 0)
    ImageDraw.Draw(mask).rectangle((before.width // 2, 0, before.width, before.height), fill=255)
    after = draw(engine, "a yellow circle on a green background", "square", seed=5, steps=8,
                 reference_images=[ReferenceImage("before.png", before)],
                 mask=MaskImage("mask.png", "", mask))
    return strip([("before", before), ("mask", mask.convert("RGB")), ("after", after)])


def lora_strip(engine: Engine) -> Image.Image:
    """Prompts in the colours only the shipped tiny-colours LoRA knows, each without and with it
    (same seed): the base draws colours it knows instead."""
    panels = []
    for prompt, seed in (("a cyan circle on a brown background", 3), ("a pink square on a cyan background", 4)):
        fg, _, bg = tiny_data.parse_prompt(prompt, tiny_data.EXTENDED_NAMES)
        for loras, caption in (([], "no LoRA"), ([{"name": "tiny-colours"}], "tiny-colours")):
            panels.append((f"{fg}/{bg}, {caption}", draw(engine, prompt, "square", seed=seed, loras=loras)))
    return strip(panels)


def strip(panels: list[tuple[str, Image.Image]]) -> Image.Image:
    """64-px pictures side by side, scaled up, each captioned."""
    cell, label = 64 * SCALE, 18
    sheet = Image.new("RGB", (len(panels) * (cell + GAP) + GAP, cell + 2 * GAP + label), BACKDROP)
    pen = ImageDraw.Draw(sheet)
    for i, (caption, image) in enumerate(panels):
        x = GAP + i * (cell + GAP)
        sheet.paste(big(image), (x, GAP))
        pen.text((x, GAP + cell + 4), caption, fill=TEXT)
    return sheet


PICTURES = {"tiny-grid": grid, "strength": strength_strip, "mask": mask_strip, "lora": lora_strip}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in PICTURES]
    if unknown:
        print(f"unknown picture(s) {', '.join(unknown)}; choose from {', '.join(PICTURES)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    engine = Engine.load("tiny")
    for name in names or PICTURES:
        PICTURES[name](engine).save(OUT / f"{name}.png", optimize=True)
        print(f"wrote {OUT / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
