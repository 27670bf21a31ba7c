"""Reading the multipart form of POST /v1/images/edits: text fields and uploaded images.

Every malformed form is a 400 (OpenAI's shape): too many parts, part headers that are too
many, too long or not headers at all (aiohttp's parser raises its HttpProcessingError for
those, which is no ValueError), encodings we do not take. The whole form must arrive within
the server's body timeout.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.fields import FIELD
from flux2cli.pipeline.images import decode_image_bytes, decode_openai_mask
from flux2cli.pipeline.request import ReferenceImage
from flux2cli.server.openai_compat import OpenAIRequestError
from flux2cli.server.payload import MAX_REFERENCE_IMAGES
from flux2cli.server.state import CONFIG

_IMAGE_FIELD = re.compile(r"image(\[\d{0,2}\])?")
# A form carries text: numbers are converted for OpenAI's own numeric fields and for each
# declared field by its OpenAI name (n is batch), so a new numeric field converts too.
_OPENAI_NUMBERS = {"output_compression": int, "partial_images": int}
MAX_FORM_PARTS = 32
_PLAIN_TRANSFER = ("binary", "8bit", "7bit")


def _form_numbers() -> dict[str, type]:
    kinds = {"integer": int, "number": float}
    ours = {field.openai: kinds[field.kind] for field in FIELD.values()
            if field.openai and field.openai != "size" and field.kind in kinds}  # size is WxH text
    return {**_OPENAI_NUMBERS, **ours}


async def read_edit_form(request: web.Request, max_bytes: int) -> tuple[dict[str, Any], list[ReferenceImage]]:
    """The text fields (numbers converted) and the decoded images of an edit form; a ``mask``
    part arrives in the fields, turned from OpenAI's convention into ours (a MaskImage)."""
    fields: dict[str, Any] = {}
    uploads: list[tuple[str, bytes]] = []
    timeout = request.app[CONFIG].body_timeout
    try:
        await asyncio.wait_for(_read_parts(request, max_bytes, fields, uploads), timeout)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {timeout:g} seconds") from None
    if len(uploads) > MAX_REFERENCE_IMAGES:
        raise OpenAIRequestError(f"at most {MAX_REFERENCE_IMAGES} images are allowed (got {len(uploads)})",
                                 param="image")
    images = []
    for index, (name, data) in enumerate(uploads):
        label = name if len(uploads) == 1 else f"image {index + 1}"
        try:
            images.append(ReferenceImage("upload", await asyncio.to_thread(decode_image_bytes, data, label)))
        except InvalidRequest as error:
            raise OpenAIRequestError(str(error), param="image") from None
    if "mask" in fields:
        try:
            fields["mask"] = await asyncio.to_thread(decode_openai_mask, fields["mask"], "mask")
        except InvalidRequest as error:
            raise OpenAIRequestError(str(error), param="mask") from None
    return fields, images


async def _read_parts(request: web.Request, max_bytes: int, fields: dict[str, Any],
                      uploads: list[tuple[str, bytes]]) -> None:
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                raise OpenAIRequestError("every part of the form needs a name (nested multipart is not supported)")
            if len(fields) + len(uploads) >= MAX_FORM_PARTS:
                raise OpenAIRequestError(f"the form has more than {MAX_FORM_PARTS} parts")
            transfer = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING)
            if part.headers.get(hdrs.CONTENT_ENCODING) or (transfer and transfer.lower() not in _PLAIN_TRANSFER):
                raise OpenAIRequestError(f"form part {part.name[:40]!r} is encoded; send it as plain bytes")
            data = bytearray()
            while chunk := await part.read_chunk():
                total += len(chunk)
                if total > max_bytes:
                    raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=total)
                data.extend(chunk)
            _add_part(part.name, bytes(data), fields, uploads)
    except HttpProcessingError as error:
        raise OpenAIRequestError(f"a part of the form has malformed headers ({_reason(error)})") from None
    except (ValueError, RuntimeError, TypeError) as error:
        raise OpenAIRequestError("the body could not be read as multipart/form-data") from error


def _reason(error: HttpProcessingError) -> str:
    """aiohttp's message without the bytes it quotes (they are the client's)."""
    return (error.message or type(error).__name__).splitlines()[0][:60].rstrip(":")


def _add_part(name: str, data: bytes, fields: dict[str, Any], uploads: list[tuple[str, bytes]]) -> None:
    if _IMAGE_FIELD.fullmatch(name):
        uploads.append((name, data))
        return
    if name in fields:
        raise OpenAIRequestError(f"the form field {name[:40]!r} is given twice", param=name[:40])
    if name == "mask":  # a PNG, decoded with the images
        fields[name] = data
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise OpenAIRequestError(f"the form field {name[:40]!r} is not UTF-8 text", param=name[:40]) from None
    convert = _form_numbers().get(name)
    if convert is not None and text.strip():
        try:
            fields[name] = convert(text)
            return
        except ValueError:
            pass  # GenerationRequest or _whole reports the value as given
    fields[name] = text
