"""JSON bodies, and the one function that turns any error into a response.

Error bodies are always the spec's ``{"success": false, "error": "..."}``. The message
comes from ``Flux2Error`` (one line a person can act on) or from a fixed table for
HTTP-level refusals; unexpected exceptions become a generic 500, never a traceback,
a local path or a token.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flux2cli.errors import Busy, Flux2Error

# HTTP refusals that do not come from flux2cli's own errors.
_HTTP_MESSAGES = {
    400: "bad request",
    401: "this server needs an API key: send Authorization: Bearer KEY or X-API-Key: KEY",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "the request body is too large",
    408: "the request took too long to arrive",
    415: "send the request body as JSON with Content-Type: application/json",
}


MAX_MESSAGE_CHARS = 400  # messages may quote a client's value; never echo a whole upload


def _clip(text: str) -> str:
    # Cut before splitting: a message that quotes a huge value must not cost its size again.
    longer = len(text) > 2 * MAX_MESSAGE_CHARS
    text = " ".join(text[: 2 * MAX_MESSAGE_CHARS].split())
    return text if len(text) <= MAX_MESSAGE_CHARS and not longer else text[: MAX_MESSAGE_CHARS - 1] + "…"


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def error_body(message: str) -> dict[str, Any]:
    return {"success": False, "error": message}


def error_response(error: BaseException, *, retry_after: int | None = None,
                   message: str | None = None) -> web.Response:
    """The response for ``error``: a ``Flux2Error``, an aiohttp ``HTTPException`` or a bug."""
    status, text, headers = error_parts(error, retry_after=retry_after, message=message)
    return json_response(error_body(text), status=status, headers=headers)


def error_parts(error: BaseException, *, retry_after: int | None = None,
                message: str | None = None) -> tuple[int, str, dict[str, str]]:
    """The status, the message a client may read (clipped; never a traceback or a path) and
    the headers for ``error``, whatever shape the body then takes."""
    headers: dict[str, str] = {}
    if isinstance(error, Flux2Error):
        status = error.http_status
        text = _clip(message or str(error))
    elif isinstance(error, web.HTTPException):
        status = error.status
        own = error.text if error.text and not error.text.startswith(f"{status}:") else None
        text = message or own or _HTTP_MESSAGES.get(status, error.reason)
        if isinstance(error, web.HTTPMethodNotAllowed):
            headers["Allow"] = ", ".join(sorted(error.allowed_methods))
            text = f"method not allowed; use {headers['Allow']}"
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="flux2"'
    else:
        status = 500
        text = "internal server error; the server log has details"
    if status == 503 or isinstance(error, Busy):
        headers["Retry-After"] = str(retry_after or 5)
    return status, text, headers
