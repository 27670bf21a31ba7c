"""LoRAs on the server: ``GET /loras`` and the check that a request names only those offered.

A request names LoRAs (``loras: [{"name", "scale"}]``); the names come from the server's
catalog (the shipped LoRAs, ``--lora-dir`` and the operator's ``--lora`` sources), never
from a client's path, so a client cannot make the server open a file.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from flux2cli.errors import InvalidRequest
from flux2cli.server.responses import json_response
from flux2cli.server.state import ENGINE


def offered(engine: Any) -> tuple[str, ...]:
    """The names this server takes (an engine without LoRA support offers none)."""
    loras = getattr(engine, "loras", None)
    return tuple(loras.catalog.names()) if loras is not None else ()


def check_offered(request: Any, engine: Any) -> Any:
    """The request, once every LoRA it names is one this server offers (else a 400 naming them)."""
    names = offered(engine)
    for ref in request.loras or ():
        if ref.name not in names:
            shown = ", ".join(names) or "none"
            raise InvalidRequest(f"loras: no LoRA named {ref.name!r} on this server (GET /loras lists them: "
                                 f"{shown})", field="loras")
    return request


async def list_loras(request: web.Request) -> web.Response:
    """GET /loras: name, the model family each file was made for, rank and format."""
    loras = getattr(request.app[ENGINE], "loras", None)
    entries = await asyncio.to_thread(loras.catalog.describe) if loras is not None else []
    defaults = [ref.as_json() for ref in loras.defaults] if loras is not None else []
    return json_response({"loras": entries, "defaults": defaults})
