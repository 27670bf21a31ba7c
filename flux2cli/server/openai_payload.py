"""OpenAI Images API bodies turned into the one validated ``GenerationRequest``.

This module translates OpenAI's names (``n``, ``size`` as "WxH", ``output_format``) and
checks what only this API has; every value that reaches the generation is then checked
by ``GenerationRequest.create`` like any other front end's, and its messages come back
with the OpenAI field they concern as ``param``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flux2cli.errors import InvalidRequest, UnknownModel
from flux2cli.pipeline.fields import FIELD, quote
from flux2cli.pipeline.registry import BASE_SIZES, ModelSpec, get_model
from flux2cli.pipeline.request import ORIENTATIONS, GenerationRequest, ReferenceImage
from flux2cli.server.openai_compat import OpenAIRequestError

RESPONSE_FORMATS = ("b64_json", "url")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("auto", "opaque")
# OpenAI fields that change nothing for FLUX.2; accepted so that clients sending them work.
IGNORED_FIELDS = ("quality", "style", "user", "safety_identifier", "moderation", "input_fidelity")
OPENAI_FIELDS = ("prompt", "model", "n", "size", "response_format", "output_format", "output_compression",
                 "background", "stream", "partial_images")

# Clients configured for OpenAI send its model names; they mean "the image model here".
OPENAI_MODEL_PREFIXES = ("dall-e", "gpt-image", "chatgpt-image")

_SIZE = re.compile(r"([1-9]\d{0,5})x([1-9]\d{0,5})")


def generation_fields() -> tuple[str, ...]:
    """OpenAI's fields, then ours that OpenAI has no name for, under their own names (a client's
    extra_body); strength only on edits, where there is an image."""
    ours = tuple(field.openai for field in FIELD.values()
                 if field.openai and field.openai not in OPENAI_FIELDS and field.name != "strength")
    return OPENAI_FIELDS + IGNORED_FIELDS + ours


@dataclass(frozen=True)
class ImagesCall:
    request: GenerationRequest
    response_format: str  # b64_json | url
    output_format: str  # png | jpeg | webp
    compression: int  # output_compression: the JPEG / WebP quality


def model_names(spec: ModelSpec) -> set[str]:
    return {spec.name.lower(), spec.display_name.lower(), *(alias.lower() for alias in spec.aliases)}


def check_model(value: Any, spec: ModelSpec) -> None:
    """``model`` must mean the loaded model; another model is never generated with silently."""
    if value is None or value == "":
        return
    if not isinstance(value, str):
        raise OpenAIRequestError("model must be a string such as " + repr(spec.name), param="model")
    name = value.strip().lower()
    if name in model_names(spec) or name.startswith(OPENAI_MODEL_PREFIXES):
        return
    here = f"this server runs {spec.name!r} ({spec.display_name})"
    try:
        other = get_model(name)
    except UnknownModel:
        raise OpenAIRequestError(f"The model {value[:80]!r} does not exist here; {here}: name it or leave model out",
                                 param="model", code="model_not_found", status=404) from None
    raise OpenAIRequestError(f"The model {other.name!r} is not loaded; {here}. Start `flux2 serve --model "
                             f"{other.name}` to use it", param="model", code="model_not_found", status=404)


def size_pattern(spec: ModelSpec) -> str:
    """``size`` as the schema states it: exactly the WIDTHxHEIGHT values ``GenerationRequest``
    accepts for this model (multiples of 16 that fit one of its 4mp sizes), or auto."""
    def sides(top: int) -> str:
        return "|".join(str(n) for n in range(16, top + 1, 16))
    boxes = "|".join(f"(?:{sides(w)})x(?:{sides(h)})" for w, h in dict.fromkeys(spec.largest_sizes()))
    return f"^(?:auto|{boxes})$"


def generation_call(body: dict[str, Any], spec: ModelSpec) -> ImagesCall:
    """POST /v1/images/generations: "auto" is the model's square 1 MP."""
    _check_fields(body, generation_fields())
    return _images_call(body, spec, (), "square")


def edit_call(fields: dict[str, Any], references: list[ReferenceImage], spec: ModelSpec) -> ImagesCall:
    """POST /v1/images/edits: "auto" keeps the first image's shape (the nearest orientation at 1 MP)."""
    _check_fields(fields, (*generation_fields(), "strength", "mask"))
    mask = fields.pop("mask", None)  # read_edit_form made it ours: white = regenerate
    if isinstance(fields.get("loras"), str) and fields["loras"] != "":
        fields["loras"] = _json_text(fields["loras"], "loras")
    # A form has no null: a field left empty means its default, and booleans come as text.
    fields = {name: {"false": False, "true": True}.get(value, value) if name == "stream" else value
              for name, value in fields.items() if value != ""}
    if not references:
        raise OpenAIRequestError("Missing required parameter: 'image' (send it as a file)", param="image",
                                 code="missing_required_parameter")
    return _images_call(fields, spec, tuple(references), _nearest_orientation(*references[0].size), mask)


def _images_call(body: dict[str, Any], spec: ModelSpec, references: tuple[ReferenceImage, ...],
                 auto_orientation: str, mask: Any = None) -> ImagesCall:
    prompt = body.get("prompt")
    if prompt is None:
        raise OpenAIRequestError("Missing required parameter: 'prompt'", param="prompt",
                                 code="missing_required_parameter")
    check_model(body.get("model"), spec)
    _refuse_unsupported(body)
    response_format = _choice(body, "response_format", RESPONSE_FORMATS, "b64_json")
    output_format = _choice(body, "output_format", OUTPUT_FORMATS + ("jpg",), "png").replace("jpg", "jpeg")
    if response_format == "url" and output_format != "png":
        raise OpenAIRequestError(f"output_format {output_format!r} needs response_format 'b64_json': the URL "
                                 f"points at the saved PNG", param="output_format")
    compression = _whole(body, "output_compression", 0, 100, 100)
    size = body.get("size")
    # A masked edit keeps the image's own size; "auto" names no other.
    dimensions = {} if mask is not None and size in (None, "auto") else _dimensions(size, spec, auto_orientation)
    values = {field.name: body.get(field.openai) for field in FIELD.values()
              if field.openai and field.openai not in ("prompt", "size")}
    # Clients made for OpenAI know nothing of LoRAs: they get the ones they name, never the
    # server's --lora defaults unasked.
    values["loras"] = [] if values.get("loras") is None else values["loras"]
    try:
        values["batch"] = FIELD["batch"].check(body.get("n"), spec, label="n")
        request = GenerationRequest.create(prompt, model=spec, **dimensions, **values, reference_images=references,
                                           raw_input=prompt if isinstance(prompt, str) else None, mask=mask)
    except InvalidRequest as error:
        raise _with_param(error, size, spec) from None
    return ImagesCall(request, response_format, output_format, compression)


def _json_text(text: str, name: str) -> Any:
    """A form field that carries JSON (a form has no arrays of objects)."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        raise OpenAIRequestError(f'{name} must be JSON text such as [{{"name": "tiny-colours", "scale": 0.8}}] '
                                 f"in a form (got {quote(text[:80])})", param=name) from None


def _check_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        name = unknown[0][:40]
        raise OpenAIRequestError(f"Unrecognized request argument supplied: {name!r}; this server takes "
                                 f"{', '.join(allowed)}", param=name, code="unknown_parameter")


def _refuse_unsupported(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and stream is not False:  # not `in (None, False)`: 0 == False, but not in JSON
        raise OpenAIRequestError("stream is not supported: the answer comes when the images are done "
                                 "(progress events are on POST /jobs)", param="stream")
    partial = body.get("partial_images")
    if partial is not None and (isinstance(partial, bool) or partial != 0):
        raise OpenAIRequestError("partial_images is not supported (it needs streaming)", param="partial_images")
    background = body.get("background")
    if background is not None and background not in BACKGROUNDS:
        raise OpenAIRequestError(f"background {quote(background)} is not supported: FLUX.2 makes opaque "
                                 f"images; use 'auto' or 'opaque'", param="background")


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise OpenAIRequestError(f"{name} must be one of {', '.join(allowed)} (got {quote(value)})", param=name)
    return value


def _whole(body: dict[str, Any], name: str, lo: int, hi: int, default: int, context: str = "") -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise OpenAIRequestError(f"{name} must be a whole number from {lo} to {hi}{context} (got {quote(value)})",
                                 param=name)
    return value


def _dimensions(size: Any, spec: ModelSpec, auto_orientation: str) -> dict[str, Any]:
    if size is None or size == "auto":
        return {"orientation": auto_orientation, "size": "1mp"}
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        width, height = spec.dimensions("square", "1mp")
        raise OpenAIRequestError(f"size must be 'auto' or WIDTHxHEIGHT in pixels such as '{width}x{height}' "
                                 f"(got {quote(size)})", param="size")
    return {"width": int(match[1]), "height": int(match[2])}


def _nearest_orientation(width: int, height: int) -> str:
    aspect = width / height
    return min(ORIENTATIONS, key=lambda name: abs(aspect / _aspect(name) - 1) + abs(_aspect(name) / aspect - 1))


def _aspect(orientation: str) -> float:
    width, height = BASE_SIZES[orientation]
    return width / height


def _with_param(error: InvalidRequest, size: Any, spec: ModelSpec) -> OpenAIRequestError:
    """The error under the OpenAI name of its field (``batch`` is ``n``, width/height are ``size``)."""
    field = FIELD.get(error.field or "")
    param = field.openai if field is not None and field.openai else error.field
    param = "mask" if param == "mask_image" else param  # the edit form's name for it
    message = str(error)
    if param == "size":
        width, height = spec.dimensions("square", "1mp")
        message = (f"size {quote(size)} does not suit {spec.display_name} (its 'auto' is {width}x{height}): "
                   f"{message}")
    return OpenAIRequestError(message, param=param)
