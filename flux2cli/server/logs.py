"""What the server writes to its log: escaped, bounded, and rate-limited where clients can repeat it.

Anything a client controls (a path, a header, a malformed request line, a value quoted
in an error message) may reach a log line. ``EscapingFilter`` renders every record of
the server's logger as one printable line: control characters, terminal escape
sequences and line breaks become visible escapes, so a request can neither forge log
lines nor drive the operator's terminal.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

log = logging.getLogger("flux2cli.server")

MAX_LOGGED_CHARS = 1000  # one record; a traceback keeps its own lines (escaped the same way)


def escape(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` with every non-printable character as a visible escape, cut at ``limit``."""
    clipped = text[:limit]
    if clipped.isprintable():
        out = clipped
    else:
        out = "".join(char if char.isprintable() else _escaped(char) for char in clipped)
    return out + "…" if len(text) > limit else out


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class EscapingFilter(logging.Filter):
    """Render each record once, escaped: message and arguments into one line, and the
    traceback (when there is one) line by line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_flux2_escaped", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = escape(message), ()
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = escaped_traceback(record.exc_info)
        record._flux2_escaped = True
        return True


def escaped_traceback(exc_info: Any) -> str:
    """A traceback whose frames keep their lines and whose exception messages (which may
    quote a client's value, line breaks included) are each one escaped line."""
    chain: list[traceback.TracebackException] = []
    current: traceback.TracebackException | None = traceback.TracebackException(*exc_info)
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    lines: list[str] = []
    for index, part in enumerate(reversed(chain)):
        if index:
            lines.append("(while handling the above, or caused by it:)")
        lines.append("Traceback (most recent call last):")
        lines += [escape(line, 4 * MAX_LOGGED_CHARS) for chunk in part.stack.format() for line in chunk.splitlines()]
        lines.append(escape("".join(part.format_exception_only()).strip()))
    return "\n".join(lines)


def install_escaping(logger: logging.Logger = log) -> None:
    """Idempotent: the server's logger escapes every record it emits."""
    if not any(isinstance(existing, EscapingFilter) for existing in logger.filters):
        logger.addFilter(EscapingFilter())


class OncePer:
    """Counts events and says when to report them: at the first, then at most once per
    ``seconds`` (with the count since the last report), so a flood writes a line a minute."""

    def __init__(self, seconds: float = 60.0):
        self.seconds = seconds
        self._last = -float("inf")
        self.pending = 0

    def due(self) -> int:
        """Count one event; returns how many to report now (0: stay quiet)."""
        self.pending += 1
        now = time.monotonic()
        if now - self._last < self.seconds:
            return 0
        self._last, count, self.pending = now, self.pending, 0
        return count


class ParserLog:
    """The logger handed to aiohttp's connection handlers (``handler_args``).

    aiohttp logs a request its parser refuses (a bad request line, a header over the
    limit) with ``logger.exception``: a full traceback per request, which any client can
    repeat. Those become one escaped warning line, at most once a minute; every other
    call (real bugs) goes to the server's logger with its traceback.
    """

    def __init__(self, logger: logging.Logger = log, seconds: float = 60.0):
        self._logger = logger
        self._refusals = OncePer(seconds)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc_info, HttpProcessingError):
            count = self._refusals.due()
            if count:
                self._logger.warning("refused %d malformed request(s) in the HTTP parser; latest: %s %s",
                                     count, exc_info.code, exc_info.message)
            return
        self._logger.error(msg, *args, exc_info=exc_info, **kwargs)

    def __getattr__(self, name: str) -> Any:  # debug, warning, info, isEnabledFor, ...
        return getattr(self._logger, name)
