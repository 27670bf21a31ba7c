"""Reading a JSON request body: the one reader of every JSON route."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from flux2cli.errors import InvalidRequest


def _no_constants(name: str) -> Any:
    raise ValueError(name)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 413 past the body cap, 400 for anything else."""
    raw = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object such as {\"prompt\": \"...\"}")
    return body
