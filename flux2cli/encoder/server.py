"""A self-hosted text encoder: the [dev] remote-encoder protocol, served by aiohttp.

``POST /predict`` with ``{"prompt": "..."}`` answers the prompt embeddings as safetensors
bytes (one tensor, ``prompt_embeds``, shape ``(1, max_sequence_length, dim)``): exactly
what ``RemoteTextEncoder`` (``--remote-encoder URL``) reads. One machine with the memory
for the text encoder can so encode for others that load their pipelines without one.

``GET /health`` says which model's encoder answers. The app sits behind the main server's
middlewares and connection guard (``flux2 serve --encoder-only`` runs it with the same
runner), so it has the same safe defaults: loopback Host checks, cross-site refusals, the
API key (``Authorization: Bearer KEY`` or ``X-API-Key``; clients send
``FLUX2_ENCODER_TOKEN``), a JSON content type, a body cap, and errors as
``{"success": false, "error": "..."}``.

``make_encoder_app(engine)`` serves an engine's (cached) encoder; ``make_encoder_app(encoder,
spec=spec)`` serves any ``TextEncoder``, such as the one ``load_text_encoder`` loads alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Callable

from aiohttp import web

from flux2cli.encoder.cache import CachedEncoder, EmbeddingKey
from flux2cli.errors import Flux2Error
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.server.config import ServerConfig
from flux2cli.server.connections import GUARD, ConnectionGuard, activity_middleware, connection_cap
from flux2cli.server.logs import install_escaping
from flux2cli.server.security import MIDDLEWARES, add_security_headers
from flux2cli.server.state import CONFIG

MAX_PROMPT_CHARS = 4000
MAX_BODY_BYTES = 64 * 1024
SAFETENSORS_TYPE = "application/octet-stream"
log = logging.getLogger("flux2cli.server")


@dataclass
class EncoderService:
    spec: ModelSpec
    encoder_name: str
    encode: Callable[[str], Any]  # prompt -> tensor (1, L, D)
    max_prompt_chars: int
    lock: asyncio.Lock | None = None


SERVICE = web.AppKey("flux2_encoder_service", EncoderService)


def make_encoder_app(source: Any, *, spec: ModelSpec | None = None, config: ServerConfig | None = None,
                     api_key: str | None = None, max_prompt_chars: int = MAX_PROMPT_CHARS) -> web.Application:
    """An aiohttp app serving ``source``'s text encoder (an ``Engine`` or a ``TextEncoder``).

    ``config`` gives the address, key and limits (its body cap is lowered to this
    protocol's); ``api_key`` alone is a shorthand for a loopback config with that key.
    """
    if hasattr(source, "embedding_key") and hasattr(source, "spec"):  # an Engine
        engine = source
        spec = engine.spec
        cached: CachedEncoder = engine.encoder
        encoder_name = cached.encoder.name

        def encode(prompt: str) -> Any:
            return cached.encode(engine.embedding_key(prompt))[0]
    else:
        if spec is None:
            raise TypeError("make_encoder_app(encoder) needs spec= to know the model's sequence length and layers")
        cached = source if isinstance(source, CachedEncoder) else CachedEncoder(source)
        encoder_name = getattr(cached.encoder, "name", "local encoder")

        def encode(prompt: str) -> Any:
            key = EmbeddingKey(spec.name, prompt, spec.max_sequence_length, spec.text_encoder_out_layers)
            return cached.encode(key)[0]

    if encoder_name == "remote encoder":
        raise TypeError("this engine encodes remotely itself; serve a local encoder (--local-encoder)")
    config = config or ServerConfig(api_key=api_key or None)
    config = replace(config, max_body_bytes=min(config.max_body_bytes, MAX_BODY_BYTES))
    install_escaping()
    app = web.Application(middlewares=(activity_middleware, *MIDDLEWARES), client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[GUARD] = ConnectionGuard(connection_cap(config.max_connections))
    app[SERVICE] = EncoderService(spec, encoder_name, encode, max_prompt_chars)
    app.cleanup_ctx.append(_lock_context)
    app.on_response_prepare.append(add_security_headers)
    app.router.add_post("/predict", predict)
    app.router.add_get("/health", health)
    return app


async def _lock_context(app: web.Application):
    app[SERVICE].lock = asyncio.Lock()  # one encode at a time; created on the app's loop
    yield


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "error": message}, status=status)


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({
        "success": True,
        "model": service.spec.display_name,
        "encoder": service.encoder_name,
        "max_sequence_length": service.spec.max_sequence_length,
        "format": "safetensors",
    })


async def predict(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        return _error(400, 'send JSON: {"prompt": "..."}')
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(prompt, str):
        return _error(400, 'missing "prompt" (a string)')
    if len(prompt) > service.max_prompt_chars:
        return _error(400, f"prompt over {service.max_prompt_chars} characters")
    if not _is_unicode_text(prompt):
        return _error(400, "prompt is not valid Unicode text (it has unpaired surrogates)")
    try:
        async with service.lock:
            tensor = await asyncio.to_thread(service.encode, prompt)
    except Flux2Error as error:
        return _error(error.http_status, str(error))
    except Exception:  # noqa: BLE001 - never a traceback to the client
        log.exception("encoding failed")
        return _error(500, "encoding failed; see the server log")
    return web.Response(body=await asyncio.to_thread(_to_safetensors, tensor), content_type=SAFETENSORS_TYPE,
                        headers={"X-Flux2-Model": service.spec.name})


def _is_unicode_text(text: str) -> bool:
    """JSON may carry lone surrogates; tokenizers fail on them with a TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _to_safetensors(tensor: Any) -> bytes:
    from safetensors.torch import save

    return save({"prompt_embeds": tensor.detach().to("cpu").contiguous()})
