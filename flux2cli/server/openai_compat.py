"""What the security middlewares need to know about the OpenAI-compatible routes under /v1/.

Those routes answer errors in OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``, because OpenAI's clients read nothing else; every other route keeps the spec's
``{"success": false, "error": ...}``. This module stays free of route code so that
``security.py`` can import it without importing the handlers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flux2cli.errors import InvalidRequest
from flux2cli.server.responses import error_parts

OPENAI_PREFIX = "/v1/"
# OpenAI clients upload edit images as files; the Origin and Sec-Fetch-Site checks still
# refuse the cross-site forms that the JSON-only rule keeps out of every other route.
MULTIPART_PATHS = frozenset({"/v1/images/edits"})

# status -> (OpenAI error type, code when the error names none)
_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    499: ("invalid_request_error", "cancelled"),
    502: ("server_error", "text_encoder_failed"),
    503: ("server_error", "server_busy"),
    408: ("invalid_request_error", "request_timeout"),
    507: ("server_error", None),  # out of memory or a full disk: the error's own code says which
}


class OpenAIRequestError(InvalidRequest):
    """A refusal that names the request field (``param``) and an OpenAI error ``code``."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.code = code
        self.http_status = status


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX) or path == OPENAI_PREFIX.rstrip("/")


def openai_error_body(message: str, status: int, *, param: str | None = None,
                      code: str | None = None) -> dict[str, Any]:
    kind, default_code = _KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}


def openai_error_response(error: BaseException, *, retry_after: int | None = None,
                          message: str | None = None) -> web.Response:
    """``error_response``'s answer in OpenAI's shape: the same status, message and headers."""
    status, text, headers = error_parts(error, retry_after=retry_after, message=message)
    known = error if isinstance(error, OpenAIRequestError) else None
    body = openai_error_body(text, status, param=known and known.param, code=getattr(error, "code", None))
    return web.json_response(body, status=status, headers=headers)
