"""The JSON body of POST /generate and POST /jobs, turned into a ``GenerationRequest``.

Validation lives in ``GenerationRequest.create``; this module only checks the envelope
(a JSON object with known fields), decodes reference images and applies the spec's
rule that ``strength`` matters only when an image is given.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.images import decode_base64_image
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.pipeline.request import GenerationRequest

MAX_REFERENCE_IMAGES = 4
# The spec's fields, then additions (explicit dimensions, guidance, several references).
FIELDS = ("prompt", "orientation", "size", "steps", "seed", "batch", "input_image", "strength",
          "width", "height", "guidance", "input_images")


async def generation_request(body: dict[str, Any], spec: ModelSpec) -> GenerationRequest:
    """Validate a request body; reference images are decoded off the event loop."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise InvalidRequest(f"unknown field {shown}; allowed fields: {', '.join(FIELDS)}")
    if body.get("prompt") is None:
        raise InvalidRequest("prompt is required: describe the image to generate")
    values = {name: body.get(name) for name in FIELDS}

    sources = []
    if values["input_image"] not in (None, ""):
        sources.append(("input_image", values["input_image"]))
    extra = values["input_images"]
    if extra is not None:
        if not isinstance(extra, list):
            raise InvalidRequest("input_images must be a list of base64 images")
        sources += [(f"input_images[{i}]", item) for i, item in enumerate(extra)]
    if len(sources) > MAX_REFERENCE_IMAGES:
        raise InvalidRequest(f"at most {MAX_REFERENCE_IMAGES} reference images are allowed (got {len(sources)})")

    strength = values["strength"]
    if not sources and strength is not None:
        # The spec's strength (default 0.75) applies only with an image; a client that
        # always sends it still gets a range check, and the value is then unused.
        if (not isinstance(strength, (int, float)) or isinstance(strength, bool)
                or not math.isfinite(strength) or not 0.0 <= strength <= 1.0):
            raise InvalidRequest(f"strength must be a number between 0 and 1 (got {strength!r:.40})")
        strength = None

    images = [await asyncio.to_thread(decode_base64_image, value, name) for name, value in sources]
    prompt = values["prompt"]
    return GenerationRequest.create(
        prompt,
        model=spec,
        orientation=values["orientation"],
        size=values["size"],
        width=values["width"],
        height=values["height"],
        steps=values["steps"],
        seed=values["seed"],
        batch=values["batch"],
        guidance=values["guidance"],
        reference_images=images,
        strength=strength,
        raw_input=prompt if isinstance(prompt, str) else None,
    )
