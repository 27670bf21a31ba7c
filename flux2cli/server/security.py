"""Safe defaults, as middlewares: errors as JSON, Host, Origin, API key, content type, body cap.

Order (outermost first): every refusal and every exception becomes the spec's JSON error
body (OpenAI's error shape under /v1/); then the Host header (a usable host[:port] always;
a loopback name while bound to loopback, against DNS rebinding); then cross-site Origin /
Sec-Fetch-Site (one origin may be allowed with --cors-origin); then the API key; then the
JSON content type (multipart for OpenAI's image edits) and the body cap; last, a static
name that is no file of the UI becomes the same JSON 404 as every other miss.

CORS is hand-written rather than taken from aiohttp-cors: it is one configured origin,
no credentials, and a preflight answer; a dependency would bring a general policy engine
whose defaults are the thing to get wrong.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Awaitable, Callable

from aiohttp import hdrs, web

from flux2cli.errors import Busy, Flux2Error
from flux2cli.server.config import ServerConfig, is_loopback_name
from flux2cli.server.openai_compat import MULTIPART_PATHS, is_openai_path, openai_error_response
from flux2cli.server.responses import error_response
from flux2cli.server.routes import STATIC_DIR
from flux2cli.server.state import CONFIG, WORKER

log = logging.getLogger("flux2cli.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CORS_METHODS = "GET, POST, DELETE"
CORS_HEADERS = "Authorization, Content-Type, X-API-Key, Last-Event-ID"
CORS_EXPOSED = "Retry-After, Location"
CORS_MAX_AGE = "600"


def is_public(request: web.Request) -> bool:
    """The web UI page and its static files: readable without an API key, from anywhere."""
    return request.method in _SAFE_METHODS and (request.path == "/" or request.path.startswith("/static/"))


def host_name(host_header: str) -> str:
    """The name part of a Host header (``[::1]:2222`` → ``[::1]``, ``a:80`` → ``a``).

    Anything after the name but a numeric port makes the header unusable (``""``): a
    lenient split would read ``127.0.0.1:80@evil.example`` as loopback.
    """
    host = host_header.strip()
    if host.startswith("["):
        end = host.find("]")
        name, rest = (host[: end + 1], host[end + 1:]) if end != -1 else ("", "")
    elif host.count(":") == 1:
        name, rest = host.split(":")[0], host[host.index(":"):]
    else:
        name, rest = host, ""
    port = rest[1:]
    if rest and not (rest.startswith(":") and (port == "" or (port.isascii() and port.isdigit()))):
        return ""
    return name


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as ``{"success": false, "error": ...}`` with the right status."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = None
        if error.status == 413:
            limit = request.app[CONFIG].max_body_bytes
            shown = f"{limit / 1024**2:g} MB" if limit >= 1024**2 else f"{limit / 1024:g} KB"  # the encoder's is 64 KB
            message = f"the request body is too large; the limit is {shown}"
        return _error_response(request, error, message=message)
    except Flux2Error as error:
        retry_after = request.app[WORKER].retry_after() if isinstance(error, Busy) else None
        return _error_response(request, error, retry_after=retry_after)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as error:
        # The path is the client's: the server logger's filter escapes it (logs.EscapingFilter).
        log.exception("unexpected error answering %s %s", request.method, request.path[:200])
        return _error_response(request, error)


def _error_response(request: web.Request, error: BaseException, **options) -> web.Response:
    """OpenAI's clients read only OpenAI's error shape, so its routes answer in that."""
    shape = openai_error_response if is_openai_path(request.path) else error_response
    return shape(error, **options)


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A Host that no URL can be built from is a 400 before any work (the OpenAI routes build
    image URLs from it); while bound to loopback, another name is refused (DNS rebinding)."""
    if request.app[CONFIG].loopback and not is_loopback_name(host_name(request.headers.get(hdrs.HOST, ""))):
        raise web.HTTPForbidden(text="this server answers only requests addressed to localhost or 127.0.0.1")
    try:
        request.url  # noqa: B018 - yarl refuses a port past 65535 here, as it would later
    except ValueError:
        raise web.HTTPBadRequest(text="the Host header is not a valid host name and port") from None
    return await handler(request)


def _allowed_origin(request: web.Request, config: ServerConfig) -> bool:
    """The request comes from the one origin --cors-origin allows."""
    origin = request.headers.get(hdrs.ORIGIN)
    return bool(config.cors_origin and origin and origin.lower().rstrip("/") == config.cors_origin)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site requests: a foreign Origin, or Sec-Fetch-Site: cross-site; the
    origin of --cors-origin is let through, and its preflights answered here (they carry
    no API key and have no route)."""
    if _allowed_origin(request, request.app[CONFIG]):
        if request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            return web.Response(status=204, headers={
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: CORS_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: CORS_MAX_AGE})
    elif not is_public(request):
        fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
        origin = request.headers.get(hdrs.ORIGIN)
        if fetch_site == "cross-site":
            raise web.HTTPForbidden(text="cross-site requests are refused")
        if origin is not None and origin.lower().rstrip("/") != f"{request.scheme}://{request.host}".lower():
            raise web.HTTPForbidden(text="requests from another origin are refused")
    return await handler(request)


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With an API key set, everything but the UI page and static files needs it."""
    key = request.app[CONFIG].api_key
    if key and not is_public(request) and not _key_matches(request, key):
        raise web.HTTPUnauthorized()
    return await handler(request)


def _key_matches(request: web.Request, key: str) -> bool:
    given = request.headers.get("X-API-Key")
    if given is None:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
    # compare_digest on bytes: constant time for equal lengths, no early exit on content.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8"))


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bodies are JSON (415 otherwise) and no larger than the cap (413, also while reading)."""
    if request.method in _BODY_METHODS and request.match_info.http_exception is None:
        if request.path in MULTIPART_PATHS:
            if request.content_type != "multipart/form-data":
                raise web.HTTPUnsupportedMediaType(text="send this request as multipart/form-data")
        elif request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType()
        if request.content_length is not None and request.content_length > request.app[CONFIG].max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=request.app[CONFIG].max_body_bytes,
                                                actual_size=request.content_length)
    return await handler(request)


@web.middleware
async def static_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's file response finds a missing file only while sending, and then answers an
    empty 404; checking first keeps every refusal the spec's JSON body."""
    if request.method in _SAFE_METHODS and request.path.startswith("/static/"):
        if not _is_static_file(request.match_info.get("filename", "")):
            raise web.HTTPNotFound()
    return await handler(request)


def _is_static_file(name: str) -> bool:
    """False for anything but a UI file, including names the OS refuses to look up
    (a NUL byte: ValueError; over NAME_MAX/PATH_MAX: OSError)."""
    try:
        path = (STATIC_DIR / name).resolve()
        return path.is_relative_to(STATIC_DIR) and path.is_file()
    except (OSError, ValueError):
        return False


MIDDLEWARES = (error_middleware, host_middleware, origin_middleware, api_key_middleware, body_middleware,
               static_middleware)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the same protective headers on every response."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("Cache-Control", "no-store")
    if _allowed_origin(request, request.app[CONFIG]):
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = request.app[CONFIG].cors_origin
        headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSED
        headers.add(hdrs.VARY, "Origin")
