"""Every field of a generation request, declared once.

Each ``Field`` says its wire name, type, bounds (fixed, or read from the loaded model),
default, help text, the OpenAI route's name for it and whether images store it. Small
adapters read the declaration: ``Field.check`` validates a value (``GenerationRequest.create``
calls it for every front end), ``Field.schema`` writes its JSON Schema (the server's
``/openapi.json``), ``replayed()`` lists the keys replay restores from an image, and the CLI
takes its option help from ``Field.help``.

Why plain declarations read by adapters, and not pydantic models: the CLI builds ``--help``
from these texts and must start without pydantic (about 0.09 s of imports); the bounds of
``steps`` and of the dimensions depend on the loaded model, which one static model class
cannot express; and every refusal must be our one line that names its field. Pure Python,
no third-party import: importing this module costs nothing on any path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

from flux2cli.errors import InvalidRequest
from flux2cli.lora.refs import MAX_LORAS, NAME_PATTERN, LoraRef, valid_name
from flux2cli.lora.refs import MAX_SCALE as MAX_LORA_SCALE

if TYPE_CHECKING:
    from flux2cli.pipeline.registry import ModelSpec

# A bound is a number, or read from the model when its range is the model's own.
Bound = Union[int, float, Callable[["ModelSpec"], Union[int, float]], None]

MAX_SEED = 2**63  # exclusive: a seed is any integer in [0, 2^63)
RANDOM_SEEDS = 2**32  # drawn seeds stay exact in JavaScript (decisions.md, "Seeds")
MAX_BATCH = 4
MAX_PROMPT_CHARS = 4000
MAX_REFERENCE_IMAGES = 4
DEFAULT_STRENGTH = 0.75
# Strength has a real floor, not "above 0": JSON numbers are exact, so a schema's "above 0"
# admits 1e-400, which every float parser reads as 0 (Schemathesis sent one), and a share
# that small re-runs no step anyway.
MIN_STRENGTH = 0.01
MAX_GUIDANCE = 30.0
CACHE_MODES = ("off", "taylorseer", "fbc")  # pipeline/step_cache.py installs them
# What a value is quoted with in a message at most: a 1 MB value is described, never echoed.
QUOTE_CHARS = 40
# The format of reference-image strings in the schema; "not a decodable image" is a rule that
# JSON Schema cannot state, so the format names it (tests register a generator for it).
IMAGE_FORMAT = "image-base64"
# Tab, newline and carriage return are the only control characters a prompt may hold.
_CONTROL = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f"
PROMPT_PATTERN = f"^[^{_CONTROL}]*[^\\s{_CONTROL}][^{_CONTROL}]*$"


def quote(value: Any) -> str:
    """``repr`` of a value, cut short: messages never carry an unbounded client value."""
    if isinstance(value, (list, dict, tuple, set)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**24:
        return f"a {value.bit_length()}-bit number"  # repr of a 10^5000 would cost, or raise
    text = repr(value) if not isinstance(value, str) or len(value) <= QUOTE_CHARS else repr(value[:QUOTE_CHARS])
    return text if len(text) <= QUOTE_CHARS + 10 else text[:QUOTE_CHARS] + "…"


@dataclass(frozen=True)
class Field:
    name: str  # on the wire, in metadata and (with dashes) on the command line
    kind: str  # text | integer | number | boolean | choice | image | images | loras | box
    help: str  # one line: the schema's description and the CLI option's help
    minimum: Bound = None
    maximum: Bound = None
    multiple_of: int | None = None
    choices: tuple[str, ...] = ()
    default: Any = None  # a fixed default; None when the model or chance decides
    default_text: str = ""  # how a default that is not fixed is described
    range_text: str = ""  # how bounds that are the model's, or huge, are described
    stored: bool = True  # kept in each image's metadata and restored by replay
    reference: bool = False  # a field of the reference API; the rest are additions
    openai: str | None = None  # its name on the OpenAI Images routes, where it has one
    model_bound: bool = False  # its range is the loaded model's, named in messages
    max_items: int | None = None
    # Whether a model can use the field at all; one that cannot takes only null (and says why).
    applies: Callable[[ModelSpec], bool] | None = None
    unused_text: str = ""  # why a model the field does not apply to refuses it

    def bounds(self, spec: ModelSpec | None) -> tuple[Any, Any]:
        def read(bound: Bound) -> Any:
            if callable(bound):
                return bound(spec) if spec is not None else None
            return bound
        return read(self.minimum), read(self.maximum)

    def refuse(self, message: str) -> InvalidRequest:
        return InvalidRequest(message, field=self.name)

    def check(self, value: Any, spec: ModelSpec | None = None, label: str | None = None) -> Any:
        """The value, validated and converted; None stays None (the default applies).

        ``label`` is the name messages use where a route calls the field otherwise (OpenAI's ``n``).
        """
        if value is None:
            return None
        name = label or self.name
        if self.kind == "integer":
            return self._integer(value, spec, name)
        if self.kind == "number":
            return self._number(value, spec, name)
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise self.refuse(f"{name} must be true or false (got {quote(value)})")
            return value
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise self.refuse(f"{name} must be one of {', '.join(self.choices)} (got {quote(value)})")
            return value
        if self.kind == "loras":
            return _loras(self, value, name)
        if self.kind == "box":
            return _box(self, value, spec, name)
        return value  # text and images have their own checks (request._prompt, images.py)

    def _context(self, spec: ModelSpec | None) -> str:
        return f" for {spec.display_name}" if self.model_bound and spec is not None else ""

    def _integer(self, value: Any, spec: ModelSpec | None, name: str) -> int:
        lo, hi = self.bounds(spec)
        # bool is an int in Python, but "steps": true is a client bug, not 1 step.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.refuse(f"{name} must be a whole number between {lo} and {hi}{self._context(spec)} "
                              f"(got {quote(value)})")
        if not lo <= value <= hi:
            raise self.refuse(f"{name} must be between {lo} and {hi}{self._context(spec)} (got {quote(value)})")
        if self.multiple_of and value % self.multiple_of:
            raise self.refuse(f"{name} must be a multiple of {self.multiple_of} (got {value})")
        return value

    def _number(self, value: Any, spec: ModelSpec | None, name: str) -> float:
        lo, hi = self.bounds(spec)
        allowed = f"between {lo:g} and {hi:g}"
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise self.refuse(f"{name} must be a number {allowed} (got {quote(value)})")
        if not lo <= value <= hi:
            shown = quote(value) if isinstance(value, int) else f"{value:g}"
            raise self.refuse(f"{name} must be {allowed} (got {shown})")
        return float(value)

    def option_help(self, extra: str = "") -> str:
        """The CLI option's help: the same sentence as the schema's, plus what is allowed."""
        lo, hi = self.bounds(None)
        allowed = ""
        if self.range_text:
            allowed = f" {self.range_text[0].upper()}{self.range_text[1:]}{extra}."
        elif self.choices:
            allowed = f" One of {', '.join(self.choices)}{extra}."
        elif lo is not None and hi is not None:
            allowed = f" {lo:g} to {hi:g}{extra}." if self.kind == "number" else f" {lo} to {hi}{extra}."
        elif extra:
            allowed = f" {extra.strip()}."
        fixed = f" Default {self.default}." if self.default is not None and self.kind != "number" else ""
        told = f" Default: {self.default_text}." if self.default_text else fixed
        return self.help + allowed + told

    def schema(self, spec: ModelSpec | None, loras: tuple[str, ...] | None = None) -> dict[str, Any]:
        """This field's JSON Schema (OpenAPI 3.1); optional fields also take null = the default.

        ``loras``: the LoRA names a server offers (the only names its ``loras`` field takes).
        """
        lo, hi = self.bounds(spec)
        schema: dict[str, Any] = {}
        if self.kind == "text":
            schema = {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS, "pattern": PROMPT_PATTERN}
        elif self.kind in ("integer", "number"):
            schema = {"type": self.kind}
            if lo is not None:
                schema["minimum"] = lo
            if hi is not None:
                schema["maximum"] = hi
            if self.multiple_of:
                schema["multipleOf"] = self.multiple_of
        elif self.kind == "boolean":
            schema = {"type": "boolean"}
        elif self.kind == "choice":
            schema = {"type": "string", "enum": list(self.choices)}
        elif self.kind == "image":
            schema = {"type": "string", "format": IMAGE_FORMAT}
        elif self.kind == "images":
            schema = {"type": "array", "items": {"type": "string", "format": IMAGE_FORMAT}}
            if self.max_items:
                schema["maxItems"] = self.max_items
        elif self.kind == "loras":
            schema = _loras_schema(self, loras)
        elif self.kind == "box":
            schema = {"type": "array", "minItems": 4, "maxItems": 4,
                      "items": {"type": "integer", "minimum": lo, "maximum": hi}}
        description = self.help
        if self.default_text:
            description += f" Default: {self.default_text}."
        schema["description"] = description if self.reference else f"Addition. {description}"
        if spec is not None and self.applies is not None and not self.applies(spec):
            return {"type": "null", "description": f"{schema['description']} {spec.display_name} "
                                                   f"{self.unused_text}: only null."}
        if self.default is not None:
            schema["default"] = self.default
        if self.name == "prompt":
            return schema
        description = schema.pop("description")
        default = {"default": schema.pop("default")} if "default" in schema else {}
        empty = [{"const": ""}] if self.kind == "image" else []
        return {"anyOf": [schema, *empty, {"type": "null"}], "description": description, **default}


def _steps_lo(spec: ModelSpec) -> int:
    return spec.step_range[0]


def _steps_hi(spec: ModelSpec) -> int:
    return spec.step_range[1]


def _widest(spec: ModelSpec) -> int:
    return max(width for width, _ in spec.largest_sizes())


def _tallest(spec: ModelSpec) -> int:
    return max(height for _, height in spec.largest_sizes())


def _runs_cfg(spec: ModelSpec) -> bool:
    return spec.cfg


def _expand_hi(spec: ModelSpec) -> int:
    """A quarter of the shortest side among the model's largest sizes, in steps of 16: an
    expansion the schema can state; the grown canvas must still fit (request.py checks)."""
    return min(min(size) for size in spec.largest_sizes()) // 4 // 16 * 16


_FITS = "a multiple of 16; width x height must fit within one of the model's 4mp sizes"
# The order is the reference's table, then the additions. Everything derived from the
# declaration reads this dict when it runs, so a field added here (or by a test) is
# everywhere at once.
FIELD: dict[str, Field] = {field.name: field for field in (
    Field("prompt", "text", "What to draw.", reference=True, openai="prompt"),
    Field("orientation", "choice", "Image shape; with size it picks the width and height from the model's table.",
          choices=("square", "portrait", "landscape", "16:9"), default="landscape", reference=True),
    Field("size", "choice", "Resolution step: each side 1x, 2x or 4x the orientation's 1 MP size.",
          choices=("1mp", "2mp", "4mp"), default="1mp", reference=True),
    Field("steps", "integer", "Inference steps.", minimum=_steps_lo, maximum=_steps_hi, model_bound=True,
          range_text="the model's range (10-50 for [dev], 1-50 for [klein], 1-100 for klein base)",
          default_text="the model's (25 for [dev], 4 for [klein], 50 for klein base)", reference=True, openai="steps"),
    Field("seed", "integer", "Seed; image i of a batch uses seed+i (wrapping below 2^63).", minimum=0,
          maximum=MAX_SEED - 1, range_text="0 to 2^63-1", default_text="random, below 2^32", reference=True,
          openai="seed"),
    Field("batch", "integer", "Images to make from the prompt.", minimum=1, maximum=MAX_BATCH, default=1,
          reference=True, openai="n"),
    Field("input_image", "image", "Reference image: a data URL or bare base64 PNG, JPEG or WebP "
          "(an empty string means none).", stored=False, reference=True),
    Field("strength", "number", "Share of the steps re-run from the first reference image (1.0 = from noise); "
          "used only with a reference image.", minimum=MIN_STRENGTH, maximum=1.0,
          range_text=f"{MIN_STRENGTH:g} to 1", default=DEFAULT_STRENGTH,
          default_text=f"{DEFAULT_STRENGTH} with a reference image", reference=True, openai="strength"),
    Field("width", "integer", "Explicit width in pixels, with height, instead of orientation and size.",
          minimum=16, maximum=_widest, multiple_of=16, model_bound=True, openai="size", range_text=_FITS),
    Field("height", "integer", "Explicit height in pixels, with width, instead of orientation and size.",
          minimum=16, maximum=_tallest, multiple_of=16, model_bound=True, openai="size", range_text=_FITS),
    Field("guidance", "number", "Guidance scale; guidance-distilled models ignore it.", minimum=0.0,
          maximum=MAX_GUIDANCE, default_text="the model's (4.0 for [dev] and klein base)", openai="guidance"),
    Field("input_images", "images", "Several reference images, after input_image.", stored=False,
          max_items=MAX_REFERENCE_IMAGES),
    Field("loras", "loras", "LoRAs to apply, by name (GET /loras lists them), each with a scale; "
          "negative scales are allowed.", minimum=-MAX_LORA_SCALE, maximum=MAX_LORA_SCALE, max_items=MAX_LORAS,
          default_text="the server's --lora list, none unless given; none on the OpenAI routes", openai="loras"),
    Field("negative_prompt", "text", "What to steer away from, for models that run classifier-free guidance "
          "(klein base); others refuse it.", applies=_runs_cfg, unused_text="runs no classifier-free guidance"),
    Field("cache", "choice", "Step caching: reuse transformer work between steps (taylorseer forecasts "
          "skipped steps; fbc skips the later blocks when the first barely changes); faster, slightly "
          "different images.", choices=CACHE_MODES,
          default_text="the command's or server's --cache, else off"),
    Field("mask_image", "image", "Mask for the first reference image, a data URL or bare base64 PNG, JPEG or "
          "WebP: white = regenerate, black = keep, grey = partial; resized to the image if sizes differ "
          "(an empty string means none).", stored=False),
    Field("expand", "box", "Outpainting: pixels to add left, top, right and bottom of the first reference "
          "image (each rounded up to a multiple of 16); the new border is generated.", minimum=0,
          maximum=_expand_hi, model_bound=True,
          range_text="four whole numbers L,T,R,B, each 0 to a quarter of the model's shortest 4mp side "
                     "(768 for [dev] and [klein]); the grown image must fit the model's 4mp sizes"),
    Field("preview", "boolean", "Send preview events with the image as it forms on the job's event stream "
          "(unless the server runs with --no-previews).", default=True, stored=False),
)}


def wire_names() -> tuple[str, ...]:
    """Every field a request body may hold, in the declaration's order."""
    return tuple(FIELD)


def replayed() -> tuple[str, ...]:
    """The values ``GenerationRequest.create`` takes by name, which images store and replay
    restores (the prompt travels on its own; images are passed decoded, not stored)."""
    return tuple(field.name for field in FIELD.values() if field.stored and field.name != "prompt")


def request_schema(spec: ModelSpec, loras: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The body of POST /generate and /jobs for the loaded model: every field, and the rules
    between fields that ``GenerationRequest.create`` and ``server/payload.py`` enforce."""
    explicit = {"required": ["width", "height"],
                "properties": {"width": {"type": "integer"}, "height": {"type": "integer"},
                               "orientation": {"type": "null"}, "size": {"type": "null"}},
                "anyOf": [{"properties": {"width": {"maximum": width}, "height": {"maximum": height}}}
                          for width, height in dict.fromkeys(spec.largest_sizes())]}
    named = {"properties": {"width": {"type": "null"}, "height": {"type": "null"}}}
    one_image = {"properties": {"input_image": {"enum": ["", None]}}}
    no_image = {"properties": {"input_image": {"enum": ["", None]},
                               "input_images": {"anyOf": [{"type": "null"}, {"maxItems": 0}]}}}
    no_edit = {"properties": {"mask_image": {"enum": ["", None]},  # expand 0,0,0,0 grows nothing
                              "expand": {"anyOf": [{"type": "null"}, {"items": {"const": 0}}]}}}
    room_for_it = {"properties": {"input_images": {"anyOf": [{"type": "null"},
                                                             {"maxItems": MAX_REFERENCE_IMAGES - 1}]}}}
    return {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {field.name: field.schema(spec, loras) for field in FIELD.values()},
        "allOf": [
            {"description": "width and height go together, instead of orientation and size, and fit within "
                            "one of the model's 4mp sizes", "anyOf": [named, explicit]},
            {"description": f"at most {MAX_REFERENCE_IMAGES} reference images in all",
             "anyOf": [one_image, room_for_it]},
            {"description": "mask_image and expand edit the first reference image, so they need one",
             "anyOf": [no_edit, {"not": no_image}]},
        ],
    }


def _loras(field: Field, value: Any, name: str) -> tuple[LoraRef, ...]:
    """``[{"name": ..., "scale": ...}]`` (or LoraRefs from a front end) -> LoraRefs.

    Names are plain names, never paths: a client must not make the server open a file.
    """
    if not isinstance(value, (list, tuple)):
        raise field.refuse(f'{name} must be a list of {{"name": ..., "scale": ...}} objects (got {quote(value)})')
    if len(value) > (field.max_items or 0):
        raise field.refuse(f"{name} may name at most {field.max_items} LoRAs (got {len(value)})")
    refs: list[LoraRef] = []
    for item in value:
        if isinstance(item, LoraRef):
            item = {"name": item.name, "scale": item.scale}
        if not isinstance(item, dict) or set(item) - {"name", "scale"}:
            raise field.refuse(f'each item of {name} must be an object with "name" and optionally "scale" '
                               f"(got {quote(item)})")
        lora = item.get("name")
        if not valid_name(lora):
            raise field.refuse(f"{name}: {quote(lora)} is not a LoRA name (letters, digits, _ . + -, no paths); "
                               "GET /loras lists the names")
        scale = item.get("scale")
        scale = 1.0 if scale is None else field._number(scale, None, f"{name} scale")  # the field's own range
        refs.append(LoraRef(lora, scale))
    # A name given twice is one adapter at the sum of its scales (JSON Schema cannot forbid
    # repeats of one property, so the server accepts what its schema allows).
    merged: dict[str, float] = {}
    for ref in refs:
        merged[ref.name] = merged.get(ref.name, 0.0) + ref.scale
    return tuple(LoraRef(lora, scale) for lora, scale in merged.items())


def _box(field: Field, value: Any, spec: ModelSpec | None, name: str) -> tuple[int, int, int, int] | None:
    """Four whole numbers (left, top, right, bottom), each rounded up to a multiple of 16;
    all zero is no expansion (None)."""
    lo, hi = field.bounds(spec)
    if isinstance(value, (list, tuple)) and len(value) == 4:
        sides = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
        if all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in sides):
            rounded = tuple(-(-v // 16) * 16 for v in sides)
            return rounded if any(rounded) else None  # type: ignore[return-value]
    raise field.refuse(f"{name} must be four whole numbers left, top, right, bottom, each between {lo} and {hi}"
                       f"{field._context(spec)} (got {quote(value)})")


def _loras_schema(field: Field, names: tuple[str, ...] | None) -> dict[str, Any]:
    lo, hi = field.bounds(None)
    name: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN}
    if names is not None:
        name = {"type": "string", "enum": list(names)} if names else {"not": {}}
    item = {"type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": name,
                           "scale": {"anyOf": [{"type": "number", "minimum": lo, "maximum": hi}, {"type": "null"}],
                                     "default": 1.0}}}
    schema: dict[str, Any] = {"type": "array", "items": item, "maxItems": field.max_items}
    if names is not None and not names:
        schema["maxItems"] = 0  # a server without LoRAs takes only an empty list
    return schema
