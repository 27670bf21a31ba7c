"""The JSON body of POST /generate and POST /jobs, turned into a ``GenerationRequest``.

The fields, their checks and their schema are declared once in ``pipeline/fields.py``;
this module only checks the envelope (known fields, a prompt), decodes reference images
and applies the spec's rule that ``strength`` matters only when an image is given.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.fields import FIELD, MAX_REFERENCE_IMAGES, replayed, wire_names
from flux2cli.pipeline.images import base64_bytes, decode_base64_image, decode_mask_bytes
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.pipeline.request import GenerationRequest


async def generation_request(body: dict[str, Any], spec: ModelSpec) -> GenerationRequest:
    """Validate a request body; reference images are decoded off the event loop."""
    allowed = wire_names()
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise InvalidRequest(f"unknown field {shown}; allowed fields: {', '.join(allowed)}", field=unknown[0][:40])
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("prompt is required: describe the image to generate", field="prompt")
    values = {name: body.get(name) for name in replayed()}
    for field in FIELD.values():  # the job's own options (preview): checked here, read by wants_previews
        if not field.stored and field.kind not in ("image", "images"):
            field.check(body.get(field.name), spec)

    sources = _reference_sources(body)
    if not sources:
        # The spec's strength (default 0.75) applies only with an image; a client that
        # always sends it still gets a range check, and the value is then unused.
        FIELD["strength"].check(values["strength"], spec)
        values["strength"] = None
    images = []
    for name, value in sources:
        try:
            images.append(await asyncio.to_thread(decode_base64_image, value, name))
        except InvalidRequest as error:
            raise InvalidRequest(str(error), field=name.split("[", 1)[0]) from None
    mask = None
    if body.get("mask_image") not in (None, ""):  # as input_image, an empty string means none
        try:
            data = base64_bytes(body["mask_image"], "mask_image")
            mask = await asyncio.to_thread(decode_mask_bytes, data, "mask_image")
        except InvalidRequest as error:
            raise InvalidRequest(str(error), field="mask_image") from None
    return GenerationRequest.create(prompt, model=spec, reference_images=images, mask=mask,
                                    raw_input=prompt if isinstance(prompt, str) else None, **values)


def wants_previews(body: dict[str, Any]) -> bool:
    """The ``preview`` field of a body ``generation_request`` checked: true unless false."""
    return body.get("preview") is not False


def _reference_sources(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """``input_image`` (an empty string means none), then ``input_images``."""
    sources = []
    if body.get("input_image") not in (None, ""):
        sources.append(("input_image", body["input_image"]))
    extra = body.get("input_images")
    if extra is not None:
        if not isinstance(extra, list):
            raise InvalidRequest("input_images must be a list of base64 images", field="input_images")
        sources += [(f"input_images[{i}]", item) for i, item in enumerate(extra)]
    if len(sources) > MAX_REFERENCE_IMAGES:
        raise InvalidRequest(f"at most {MAX_REFERENCE_IMAGES} reference images are allowed (got {len(sources)})",
                             field="input_images" if body.get("input_images") else "input_image")
    return sources
