"""Reading a JSON request body: the one reader of every JSON route, with its work bounded.

A body within the size cap can still cost far more to parse than its size suggests: a
31 MB list of fifteen million zeros takes seconds and over a gigabyte to build, and
``json.loads`` holds the GIL throughout (a thread would not free the event loop). So the
body's values are counted first, with one ``bytes.count`` pass: every value after the
first in a list or object follows a comma, and nesting is bounded by the recursion limit.
A real request has a few dozen values and a prompt's commas; ``MAX_JSON_COMMAS`` allows
ten times more than the longest prompt could hold. What is left is one linear parse of
at most the body cap (about 0.1 s for 32 MB of base64 on a slow core).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from flux2cli.errors import InvalidRequest
from flux2cli.server.state import CONFIG

MAX_JSON_COMMAS = 40_000


def _no_constants(name: str) -> Any:
    raise ValueError(name)


async def read_body(request: web.Request) -> bytes:
    """The whole body, within the server's body timeout (408 after it), capped by
    client_max_size (413)."""
    timeout = request.app[CONFIG].body_timeout
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {timeout:g} seconds") from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object, or one ``InvalidRequest`` line; bounded work (module doc)."""
    if raw.count(b",") > MAX_JSON_COMMAS:
        raise InvalidRequest(f"the request body holds too many JSON values (more than {MAX_JSON_COMMAS:,}); "
                             f"a generation request has a few dozen")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object such as {\"prompt\": \"...\"}")
    return body


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 413 past the body cap, 408 past the body timeout,
    400 for anything else."""
    return parse_json_object(await read_body(request))
