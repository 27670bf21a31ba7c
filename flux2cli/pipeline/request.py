"""``GenerationRequest``: the one validated description of what to generate.

The CLI, the REPL and the server all build it through ``GenerationRequest.create``,
which is the only place user values are checked; the engine trusts it. Each field's
type, bounds and messages are declared once in ``fields.py``; this module adds the rules
that involve several fields (dimensions, strength without an image, guidance and negative
prompts on distilled models).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.alternatives import expand_alternatives
from flux2cli.pipeline.fields import DEFAULT_STRENGTH, FIELD, MAX_PROMPT_CHARS, MAX_SEED, RANDOM_SEEDS, replayed
from flux2cli.pipeline.registry import DEFAULT_MODEL, ModelSpec, get_model

ORIENTATIONS = FIELD["orientation"].choices
SIZES = FIELD["size"].choices
# The REPL's /1k /2k /4k and the CLI's --size 2k name the same three steps.
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
class MaskImage:
    """A decoded mask (greyscale, white = regenerate) and the sha256 of the file it came from."""

    source: str
    sha256: str
    image: Any = field(repr=False, compare=False)  # PIL.Image.Image, mode "L"

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
    negative_prompt: str | None = None  # only for models that run classifier-free guidance
    raw_input: str | None = None  # what the user typed, modifiers included
    # LoRAs by name (flux2cli.lora.refs.LoraRef); None: the engine's defaults (a front end's --lora)
    loras: tuple[Any, ...] | None = None
    cache: str | None = None  # step caching (fields.CACHE_MODES); None: the engine's default (a front end's --cache)
    mask: MaskImage | None = None  # on the first reference image, resized to it
    expand: tuple[int, int, int, int] | None = None  # outpainting: left, top, right, bottom (multiples of 16)
    notices: tuple[str, ...] = ()  # things the user should hear, e.g. an ignored setting
    # The prompts that ``a {red|blue} circle`` stands for (alternatives.py), escapes resolved;
    # empty when the prompt is used as written. ``prompt`` keeps the braces, so the request
    # can be sent on (a resident server expands it the same way).
    alternatives: tuple[str, ...] = ()
    template: str | None = None  # on each of variants(): the prompt with its alternatives

    @property
    def image_count(self) -> int:
        """Images the request makes: ``batch`` for each of its prompts."""
        return self.batch * max(1, len(self.alternatives))

    @property
    def seeds(self) -> list[int]:
        """Image i uses seed + i (wrapping below 2^63), so any image can be re-made alone; with
        alternatives the images of prompt k come after the batches of the prompts before it."""
        return [(self.seed + i) % MAX_SEED for i in range(self.image_count)]

    def variants(self) -> list[GenerationRequest]:
        """One request per prompt, each with its own seeds; what the engine runs and each image records."""
        if not self.alternatives:
            return [self]
        raw = self.raw_input if self.raw_input is not None else self.prompt
        return [replace(self, prompt=prompt, alternatives=(), template=self.prompt, raw_input=raw,
                        seed=self.seeds[k * self.batch])
                for k, prompt in enumerate(self.alternatives)]

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready description stored in each image; images are named, not embedded."""
        return {
            "prompt": self.prompt,
            "raw_input": self.raw_input if self.raw_input is not None else self.prompt,
            "model": self.model,
            **{name: getattr(self, name) for name in replayed()},
            "loras": [ref.as_json() for ref in self.loras] if self.loras else None,
            "reference_images": [ref.source for ref in self.reference_images],
            # The mask is named, not embedded: replay needs the file again.
            "mask": {"sha256": self.mask.sha256, "width": self.mask.size[0], "height": self.mask.size[1]}
            if self.mask is not None else None,
            **({"template": self.template} if self.template is not None else {}),
        }

    @classmethod
    def create(
        cls,
        prompt: Any,
        *,
        model: ModelSpec | str | None = None,
        reference_images: tuple[ReferenceImage, ...] | list[ReferenceImage] = (),
        raw_input: str | None = None,
        mask: MaskImage | None = None,
        **values: Any,
    ) -> GenerationRequest:
        """Validate user values (possibly straight from JSON) and fill in defaults.

        ``values`` are the declared fields by wire name (``fields.replayed()``); None means
        the default. Reference images arrive decoded, as ``reference_images``. A declared
        field that no rule below concerns reaches the request as checked.
        """
        names = replayed()
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(f"GenerationRequest.create() got undeclared fields {unknown}")
        spec = model if isinstance(model, ModelSpec) else get_model(model or DEFAULT_MODEL)
        checked = {name: FIELD[name].check(values.get(name), spec) for name in names}
        checked["prompt"] = _prompt(prompt)
        checked["width"], checked["height"], checked["orientation"], checked["size"] = _dimensions(spec, checked)
        if checked["steps"] is None:
            checked["steps"] = spec.default_steps
        checked["batch"] = checked["batch"] or 1
        alternatives = expand_alternatives(checked["prompt"], checked["batch"])
        if alternatives is not None:  # each must be a prompt in its own right ("{|x}" has an empty one)
            alternatives = tuple(_prompt(text) for text in alternatives)
        if checked["seed"] is None:
            checked["seed"] = secrets.randbelow(RANDOM_SEEDS)

        notices: list[str] = []
        if spec.distilled:
            if checked["guidance"] is not None:
                notices.append(f"{spec.display_name} is guidance-distilled: the guidance value is ignored")
            checked["guidance"] = None
        elif checked["guidance"] is None:
            checked["guidance"] = spec.default_guidance

        if checked["negative_prompt"] is not None:
            checked["negative_prompt"] = _prompt(checked["negative_prompt"], "negative_prompt")
            if not spec.cfg:
                kind = "guidance-distilled" if spec.default_guidance is not None else "step-distilled"
                raise InvalidRequest(f"{spec.display_name} is {kind} and would ignore negative_prompt; "
                                     "negative prompts need a model that runs classifier-free guidance "
                                     "(klein-base-4b, klein-base-9b)", field="negative_prompt")
            if checked["guidance"] <= 1:
                notices.append("guidance 1 or below runs no classifier-free guidance: the negative prompt is ignored")

        references = tuple(reference_images)
        if checked["strength"] is not None and not references:
            raise InvalidRequest("strength needs a reference image; add an input image or drop strength",
                                 field="strength")
        if mask is not None or checked["expand"] is not None:
            mask = _masked_edit(spec, references, mask, checked, values, notices)
        if references and checked["strength"] is None:
            checked["strength"] = DEFAULT_STRENGTH
        return cls(model=spec.name, reference_images=references, raw_input=raw_input, mask=mask,
                   notices=tuple(notices), alternatives=alternatives or (), **checked)


def _masked_edit(spec: ModelSpec, references: tuple[ReferenceImage, ...], mask: MaskImage | None,
                 checked: dict[str, Any], given: dict[str, Any], notices: list[str]) -> MaskImage | None:
    """The rules of masked edits and outpainting; sets the output size, returns the mask fitted.

    An all-white mask is plain img2img over the whole image: allowed, with a notice (the
    result is the same as without the mask). An all-black one, with nothing to expand,
    would change nothing: refused.
    """
    from flux2cli.pipeline.inpaint import output_size

    expand = checked["expand"]
    name = "mask_image" if mask is not None else "expand"
    if not references:
        raise InvalidRequest(f"{name} edits the first reference image; add an input image", field=name)
    first = references[0]
    if mask is not None:
        if mask.size != first.size:
            from PIL import Image

            notices.append(f"the mask is {mask.size[0]}x{mask.size[1]} and the image {first.size[0]}x"
                           f"{first.size[1]}: the mask was resized to the image")
            mask = MaskImage(mask.source, mask.sha256, mask.image.resize(first.size, Image.BILINEAR))
        low, high = mask.image.getextrema()
        if high == 0 and expand is None:
            raise InvalidRequest("the mask is all black: nothing to regenerate (paint white where the image "
                                 "should change)", field="mask_image")
        if low == 255:
            notices.append("the mask is all white: the whole image is regenerated, as without a mask")
    width, height = output_size(first.size, expand)
    if not any(width <= w and height <= h for w, h in spec.largest_sizes()):
        boxes = ", ".join(f"{w}x{h}" for w, h in dict.fromkeys(spec.largest_sizes()))
        raise InvalidRequest(f"expand makes the image {width}x{height}, larger than {spec.display_name}'s 4mp sizes "
                             f"allow: it must fit within one of {boxes}", field="expand")
    if any(given.get(key) is not None for key in ("width", "height", "orientation", "size")):
        notices.append(f"a masked edit keeps the image's size ({width}x{height}): the size given is ignored")
    checked["width"], checked["height"], checked["orientation"], checked["size"] = width, height, None, None
    if checked["strength"] is None:
        checked["strength"] = 1.0  # the masked area is regenerated fully unless strength says otherwise
    return mask


def _prompt(value: Any, name: str = "prompt") -> str:
    """A prompt (or negative prompt), checked as the schema's text fields say."""
    def refuse(message: str) -> InvalidRequest:
        return InvalidRequest(message, field=name)

    if not isinstance(value, str):
        raise refuse(f"{name} must be a text string")
    if len(value) > MAX_PROMPT_CHARS:
        raise refuse(f"{name} is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}")
    text = value.strip()
    if not text:
        raise refuse("prompt is empty; describe the image to generate" if name == "prompt"
                     else f"{name} is empty; give some text or leave it out")
    if any(ord(ch) < 32 and ch not in _ALLOWED_CONTROL for ch in text):
        raise refuse(f"{name} contains control characters (such as NUL); remove them")
    try:  # JSON "\ud800" or undecodable argv bytes; the tokenizer and the sidecar would choke later
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse(f"{name} is not valid Unicode text (it has unpaired surrogates)") from None
    return text


def normalize_size(value: str) -> str:
    """A size as a person types it (``2K``, ``4mp``) in the wire's spelling; the front ends call it."""
    key = value.strip().lower()
    return SIZE_ALIASES.get(key, key)


def parse_expand(text: str, label: str = "--expand") -> list[int]:
    """``L,T,R,B`` as typed (one number is all four sides); the field then checks the values."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) == 1:
        parts *= 4
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        raise InvalidRequest(f"{label} takes four whole numbers LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. 0,0,256,0 "
                             f"(got {text[:40]!r})", field="expand")
    return [int(part) for part in parts]


def _dimensions(spec: ModelSpec, checked: dict[str, Any]) -> tuple[int, int, str | None, str | None]:
    width, height = checked["width"], checked["height"]
    orientation, size = checked["orientation"], checked["size"]
    if width is None and height is None:
        orientation = orientation or FIELD["orientation"].default
        size = size or FIELD["size"].default
        return (*spec.dimensions(orientation, size), orientation, size)
    if width is None or height is None:
        raise InvalidRequest("give both width and height, or neither (then orientation and size decide)",
                             field="height" if height is None else "width")
    if orientation is not None or size is not None:
        raise InvalidRequest("give either width/height or orientation/size, not both",
                             field="orientation" if orientation is not None else "size")
    largest = spec.largest_sizes()
    if not any(width <= w and height <= h for w, h in largest):
        boxes = ", ".join(f"{w}x{h}" for w, h in dict.fromkeys(largest))
        raise InvalidRequest(f"{width}x{height} is larger than {spec.display_name}'s 4mp sizes allow: it must fit "
                             f"within one of {boxes}", field="width")
    return width, height, None, None
