"""Synthetic data, palette and scoring for the embedded ``tiny`` FLUX.2 [klein] model.

The task: ``a {fg} {shape} on a {bg} background`` -> a flat-colour filled shape on a flat
background.  This module only needs numpy (no torch), so tests can import it cheaply.

Contents
--------
- ``PALETTE``, ``COLOR_NAMES``, ``SHAPES``, ``RESOLUTIONS`` (W, H), ``make_prompt``,
  ``all_prompts`` (the 8*7*3 = 168 prompts), ``parse_prompt``.
- ``NEW_COLOURS`` / ``EXTENDED_NAMES``: three colours the base model never learned, taught by
  the shipped ``tiny-colours`` LoRA (scripts/train_tiny_lora.py); functions that take
  ``colours`` default to the base eight.
- ``render(...)`` / ``sample_image(rng, ...)`` / ``sample_batch(rng, ...)``: seeded images.
- Scoring of generated images: ``classify_background``, ``classify_foreground``,
  ``classify_shape`` and ``score_image`` (all numpy, uint8 HxWx3 in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# name -> RGB, exactly these values
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOR_NAMES: list[str] = list(PALETTE)
# taught by the tiny-colours LoRA; the VAE decoder was refined on all eleven so it can draw them
NEW_COLOURS: dict[str, tuple[int, int, int]] = {
    "pink": (255, 105, 180),
    "cyan": (0, 200, 220),
    "brown": (140, 80, 30),
}
EXTENDED_PALETTE: dict[str, tuple[int, int, int]] = {**PALETTE, **NEW_COLOURS}
EXTENDED_NAMES: list[str] = list(EXTENDED_PALETTE)
SHAPES: list[str] = ["circle", "square", "triangle"]
# (width, height)
RESOLUTIONS: list[tuple[int, int]] = [(64, 64), (80, 48), (48, 80)]

MARGIN = 6  # pixels of pure background kept around the shape's bounding box
SIZE_RANGE = (0.50, 0.72)  # shape size as a fraction of the short side: >= 3 latent tokens across
SUPERSAMPLE = 4  # anti-aliasing factor used when rendering

PROMPT_TEMPLATE = "a {fg} {shape} on a {bg} background"
_PROMPT_RE = re.compile(r"^\s*an?\s+(\w+)\s+(\w+)\s+on\s+an?\s+(\w+)\s+background\s*$", re.IGNORECASE)


def make_prompt(fg: str, shape: str, bg: str) -> str:
    return PROMPT_TEMPLATE.format(fg=fg, shape=shape, bg=bg)


def all_combos(colours: list[str] = COLOR_NAMES) -> list[tuple[str, str, str]]:
    """All (fg, shape, bg) triples with fg != bg, in a fixed order (168 of them for the base eight)."""
    return [(fg, shape, bg) for fg in colours for shape in SHAPES for bg in colours if fg != bg]


def all_prompts(colours: list[str] = COLOR_NAMES) -> list[str]:
    return [make_prompt(*c) for c in all_combos(colours)]


def parse_prompt(prompt: str, colours: list[str] = COLOR_NAMES) -> tuple[str, str, str] | None:
    """``"a red circle on a blue background"`` -> ``("red", "circle", "blue")`` (None if not of that form)."""
    m = _PROMPT_RE.match(prompt)
    if not m:
        return None
    fg, shape, bg = (g.lower() for g in m.groups())
    if fg not in colours or bg not in colours or shape not in SHAPES:
        return None
    return fg, shape, bg


# --------------------------------------------------------------------------- rendering


@dataclass
class ShapeSpec:
    shape: str
    cx: float  # centre of the bounding box, pixels (continuous coordinates, 0 = left edge)
    cy: float
    size: float  # bounding-box side length in pixels


def _coverage(spec: ShapeSpec, width: int, height: int, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction of each pixel covered by the shape (HxW float32), by ss x ss supersampling
    (evaluated only inside the shape's bounding box, which is all that can be covered)."""
    r = spec.size / 2.0
    x0, x1 = max(0, int(np.floor(spec.cx - r)) - 1), min(width, int(np.ceil(spec.cx + r)) + 1)
    y0, y1 = max(0, int(np.floor(spec.cy - r)) - 1), min(height, int(np.ceil(spec.cy + r)) + 1)
    xs = x0 + (np.arange((x1 - x0) * ss, dtype=np.float32) + 0.5) / ss
    ys = y0 + (np.arange((y1 - y0) * ss, dtype=np.float32) + 0.5) / ss
    dx = (xs - spec.cx)[None, :]
    y = ys[:, None]
    dy = y - spec.cy
    if spec.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif spec.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif spec.shape == "triangle":
        # upright isosceles triangle: apex at top centre, base along the bottom of the box
        top = spec.cy - r
        inside = (y <= spec.cy + r) & (y >= top) & (np.abs(dx) <= (y - top) / 2.0)
    else:
        raise ValueError(f"unknown shape {spec.shape!r}")
    cov = np.zeros((height, width), dtype=np.float32)
    cov[y0:y1, x0:x1] = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    return cov


def render(fg: str, bg: str, spec: ShapeSpec, width: int, height: int) -> np.ndarray:
    """uint8 HxWx3 image of ``spec`` in colour ``fg`` on ``bg``."""
    cov = _coverage(spec, width, height)[..., None]
    fg_c = np.array(EXTENDED_PALETTE[fg], dtype=np.float32)
    bg_c = np.array(EXTENDED_PALETTE[bg], dtype=np.float32)
    img = bg_c * (1.0 - cov) + fg_c * cov
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def random_spec(rng: np.random.Generator, shape: str, width: int, height: int) -> ShapeSpec:
    short = min(width, height)
    size = float(rng.uniform(*SIZE_RANGE)) * short
    r = size / 2.0
    # keep MARGIN pixels of pure background between the bounding box and the border
    cx = float(rng.uniform(MARGIN + r, width - MARGIN - r))
    cy = float(rng.uniform(MARGIN + r, height - MARGIN - r))
    return ShapeSpec(shape, cx, cy, size)


def sample_image(rng: np.random.Generator, fg: str, shape: str, bg: str, width: int, height: int) -> np.ndarray:
    return render(fg, bg, random_spec(rng, shape, width, height), width, height)


def sample_batch(
    rng: np.random.Generator, batch_size: int, width: int, height: int, colours: list[str] = COLOR_NAMES
) -> tuple[np.ndarray, np.ndarray]:
    """Random batch: (images uint8 BxHxWx3, combo indices into ``all_combos(colours)``)."""
    combos = all_combos(colours)
    idx = rng.integers(0, len(combos), size=batch_size)
    imgs = np.stack([sample_image(rng, *combos[i], width, height) for i in idx])
    return imgs, idx


# --------------------------------------------------------------------------- scoring


def nearest_palette(pixels: np.ndarray, colours: list[str] = COLOR_NAMES) -> np.ndarray:
    """Index into ``colours`` of the nearest palette colour of each pixel (..., 3) -> (...)."""
    p = np.asarray(pixels, dtype=np.float32)[..., None, :]
    ref = np.array([EXTENDED_PALETTE[c] for c in colours], dtype=np.float32)
    d = ((p - ref) ** 2).sum(-1)
    return d.argmin(-1)


def border_pixels(img: np.ndarray, width: int = 2) -> np.ndarray:
    img = np.asarray(img)
    return np.concatenate(
        [
            img[:width].reshape(-1, 3),
            img[-width:].reshape(-1, 3),
            img[width:-width, :width].reshape(-1, 3),
            img[width:-width, -width:].reshape(-1, 3),
        ]
    )


def classify_background(img: np.ndarray, colours: list[str] = COLOR_NAMES) -> str:
    """Majority vote of the nearest palette colour over a 2-pixel border ring."""
    votes = np.bincount(nearest_palette(border_pixels(img), colours), minlength=len(colours))
    return colours[int(votes.argmax())]


def classify_foreground(img: np.ndarray, bg: str | None = None, min_pixels: int = 12,
                        colours: list[str] = COLOR_NAMES) -> str | None:
    """Majority vote of the nearest palette colour over pixels whose nearest colour is not ``bg``.

    Returns None when fewer than ``min_pixels`` pixels differ from the background (no shape).
    """
    img = np.asarray(img)
    bg = bg or classify_background(img, colours)
    lab = nearest_palette(img.reshape(-1, 3), colours)
    lab = lab[lab != colours.index(bg)]
    if lab.size < min_pixels:
        return None
    votes = np.bincount(lab, minlength=len(colours))
    return colours[int(votes.argmax())]


def foreground_mask(img: np.ndarray, fg: str, bg: str) -> np.ndarray:
    """Pixels closer to ``fg`` than to ``bg`` (HxW bool); a two-class split is robust to blends
    along the edge that happen to lie near a third palette colour."""
    p = np.asarray(img, dtype=np.float32)
    dfg = ((p - np.array(EXTENDED_PALETTE[fg], np.float32)) ** 2).sum(-1)
    dbg = ((p - np.array(EXTENDED_PALETTE[bg], np.float32)) ** 2).sum(-1)
    return dfg < dbg


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of a bool mask (pure numpy flood fill)."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    best, best_n, cur = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        cur += 1
        stack = [(y0, x0)]
        labels[y0, x0] = cur
        n = 0
        while stack:
            y, x = stack.pop()
            n += 1
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not labels[yy, xx]:
                    labels[yy, xx] = cur
                    stack.append((yy, xx))
        if n > best_n:
            best, best_n = cur, n
    return labels == best if best else np.zeros_like(mask)


# thresholds between the ideal bounding-box fill ratios: triangle 0.5 | circle pi/4 | square 1
SHAPE_FILL = {"triangle": 0.5, "circle": np.pi / 4, "square": 1.0}
FILL_TRI_CIRCLE = 0.5 * (0.5 + np.pi / 4)  # ~0.64
FILL_CIRCLE_SQUARE = 0.5 * (np.pi / 4 + 1.0)  # ~0.89


def shape_fill_ratio(mask: np.ndarray) -> float | None:
    """Area of the largest foreground component / area of its bounding box."""
    comp = _largest_component(mask)
    if comp.sum() < 12:
        return None
    ys, xs = np.nonzero(comp)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return float(comp.sum()) / float(box)


def classify_shape(img: np.ndarray, fg: str, bg: str) -> str | None:
    """Shape from the bounding-box fill ratio of the foreground (largest component):
    square ~1, circle ~0.785, triangle ~0.5; thresholds halfway between."""
    fill = shape_fill_ratio(foreground_mask(img, fg, bg))
    if fill is None:
        return None
    if fill >= FILL_CIRCLE_SQUARE:
        return "square"
    if fill >= FILL_TRI_CIRCLE:
        return "circle"
    return "triangle"


def score_image(img: np.ndarray, fg: str, shape: str, bg: str, colours: list[str] = COLOR_NAMES) -> dict:
    """Score one generated image against its prompt's (fg, shape, bg).

    Background is judged on its own; the foreground colour is judged given the detected
    background; the shape is judged on the mask of pixels closer to the *detected* foreground
    colour than to the *detected* background (what the image shows, so a shape drawn in a
    wrong colour can still count as the right shape: the three scores are separable).
    ``colours`` are the names a pixel may be classified as (``EXTENDED_NAMES`` for the LoRA).
    """
    img = np.asarray(img)
    pred_bg = classify_background(img, colours)
    pred_fg = classify_foreground(img, pred_bg, colours=colours)
    pred_shape = classify_shape(img, pred_fg, pred_bg) if pred_fg is not None else None
    return {
        "bg": pred_bg,
        "fg": pred_fg,
        "shape": pred_shape,
        "bg_ok": pred_bg == bg,
        "fg_ok": pred_fg == fg,
        "shape_ok": pred_shape == shape,
    }
