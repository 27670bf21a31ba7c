"""``GenerationRequest``: the one validated description of what to generate.

The CLI, the REPL and the server all build it through ``GenerationRequest.create``,
which is the only place user values are checked; the engine trusts it.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.registry import BASE_SIZES, SIZE_MULTIPLIERS, ModelSpec, resolve_model

MAX_SEED = 2**63  # exclusive
MAX_BATCH = 4
MAX_PROMPT_CHARS = 4000
DEFAULT_ORIENTATION = "landscape"
DEFAULT_SIZE = "1mp"
DEFAULT_STRENGTH = 0.75

ORIENTATIONS = tuple(BASE_SIZES)
SIZES = tuple(SIZE_MULTIPLIERS)
# The REPL's /1k /2k /4k name the same three steps as the server's sizes.
SIZE_ALIASES = {"1k": "1mp", "2k": "2mp", "4k": "4mp"}
_ALLOWED_CONTROL = {"\n", "\r", "\t"}


@dataclass(frozen=True)
class ReferenceImage:
    """A decoded reference image and where it came from (a path, or "upload")."""

    source: str
    image: Any = field(repr=False, compare=False)  # PIL.Image.Image

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    model: str
    width: int
    height: int
    steps: int
    seed: int
    batch: int = 1
    guidance: float | None = None
    orientation: str | None = None  # None when width/height were given explicitly
    size: str | None = None
    reference_images: tuple[ReferenceImage, ...] = ()
    strength: float | None = None
    raw_input: str | None = None  # what the user typed, modifiers included
    notices: tuple[str, ...] = ()  # things the user should hear, e.g. an ignored setting

    @property
    def seeds(self) -> list[int]:
        """Image i of a batch uses seed + i, so any image can be re-made alone."""
        return [self.seed + i for i in range(self.batch)]

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready description stored in each image; images are named, not embedded."""
        return {
            "prompt": self.prompt,
            "raw_input": self.raw_input if self.raw_input is not None else self.prompt,
            "model": self.model,
            "width": self.width,
            "height": self.height,
            "orientation": self.orientation,
            "size": self.size,
            "steps": self.steps,
            "seed": self.seed,
            "batch": self.batch,
            "guidance": self.guidance,
            "reference_images": [ref.source for ref in self.reference_images],
            "strength": self.strength,
        }

    @classmethod
    def create(
        cls,
        prompt: Any,
        *,
        model: ModelSpec | str | None = None,
        orientation: Any = None,
        size: Any = None,
        width: Any = None,
        height: Any = None,
        steps: Any = None,
        seed: Any = None,
        batch: Any = None,
        guidance: Any = None,
        reference_images: tuple[ReferenceImage, ...] | list[ReferenceImage] = (),
        strength: Any = None,
        raw_input: str | None = None,
    ) -> GenerationRequest:
        """Validate user values (possibly straight from JSON) and fill in defaults."""
        spec = model if isinstance(model, ModelSpec) else resolve_model(model)
        prompt = _prompt(prompt)
        width, height, orientation, size = _dimensions(spec, orientation, size, width, height)
        lo, hi = spec.step_range
        steps = spec.default_steps if steps is None else _integer("steps", steps, lo, hi, f" for {spec.display_name}")
        batch = 1 if batch is None else _integer("batch", batch, 1, MAX_BATCH)
        if seed is None:
            seed = secrets.randbelow(MAX_SEED - batch + 1)
        else:
            seed = _integer("seed", seed, 0, MAX_SEED - batch, " (the batch uses seed+i)")

        notices: list[str] = []
        if spec.distilled:
            if guidance is not None:
                _number("guidance", guidance, 0.0, 30.0)
                notices.append(f"{spec.display_name} is guidance-distilled: the guidance value is ignored")
            guidance = None
        else:
            guidance = spec.default_guidance if guidance is None else _number("guidance", guidance, 0.0, 30.0)

        references = tuple(reference_images)
        if strength is not None:
            if not references:
                raise InvalidRequest("strength needs a reference image; add an input image or drop strength")
            strength = _number("strength", strength, 0.0, 1.0)
            if strength == 0.0:
                raise InvalidRequest("strength must be above 0 and at most 1 (1.0 = start from noise)")
        elif references:
            strength = DEFAULT_STRENGTH

        return cls(
            prompt=prompt,
            model=spec.name,
            width=width,
            height=height,
            steps=steps,
            seed=seed,
            batch=batch,
            guidance=guidance,
            orientation=orientation,
            size=size,
            reference_images=references,
            strength=strength,
            raw_input=raw_input,
            notices=tuple(notices),
        )


def _prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("prompt must be a text string")
    text = value.strip()
    if not text:
        raise InvalidRequest("prompt is empty; describe the image to generate")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"prompt is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if any(ord(ch) < 32 and ch not in _ALLOWED_CONTROL for ch in text):
        raise InvalidRequest("prompt contains control characters (such as NUL); remove them")
    try:  # JSON "\ud800" or undecodable argv bytes; the tokenizer and the sidecar would choke later
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("prompt is not valid Unicode text (it has unpaired surrogates)") from None
    return text


def normalize_orientation(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in ORIENTATIONS:
        raise InvalidRequest(f"orientation must be one of {', '.join(ORIENTATIONS)} (got {value!r})")
    return value.lower()


def normalize_size(value: Any) -> str:
    key = value.lower() if isinstance(value, str) else value
    key = SIZE_ALIASES.get(key, key)
    if key not in SIZES:
        raise InvalidRequest(f"size must be one of {', '.join(SIZES)} (got {value!r})")
    return key


def _dimensions(spec: ModelSpec, orientation: Any, size: Any, width: Any, height: Any):
    if width is None and height is None:
        orientation = normalize_orientation(orientation or DEFAULT_ORIENTATION)
        size = normalize_size(size or DEFAULT_SIZE)
        return (*spec.dimensions(orientation, size), orientation, size)
    if width is None or height is None:
        raise InvalidRequest("give both width and height, or neither (then orientation and size decide)")
    if orientation is not None or size is not None:
        raise InvalidRequest("give either width/height or orientation/size, not both")
    max_w, max_h = spec.dimensions("landscape", "4mp")
    max_side = max(max_w, max_h)
    width = _integer("width", width, 16, max_side)
    height = _integer("height", height, 16, max_side)
    if width % 16 or height % 16:
        raise InvalidRequest(f"width and height must be multiples of 16 (got {width}x{height})")
    if width * height > max_w * max_h:
        raise InvalidRequest(f"{width}x{height} is larger than the 4mp limit of {max_w}x{max_h} pixels")
    return width, height, None, None


def _integer(name: str, value: Any, lo: int, hi: int, context: str = "") -> int:
    # bool is an int in Python, but "steps": true is a client bug, not 1 step.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a whole number between {lo} and {hi}{context} (got {value!r})")
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo} and {hi}{context} (got {value})")
    return value


def _number(name: str, value: Any, lo: float, hi: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number between {lo:g} and {hi:g} (got {value!r})")
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo:g} and {hi:g} (got {value:g})")
    return float(value)
