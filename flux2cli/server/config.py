"""The server's settings, fixed when it starts."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from flux2cli.errors import InvalidRequest
from flux2cli.settings import DEFAULT_HOST, DEFAULT_PORT
from flux2cli.server.worker import DEFAULT_PREVIEW_EVERY, DEFAULT_QUEUE_SIZE, DEFAULT_REFERENCE_PIXEL_BUDGET

# Enough for a 4 MP (2048x2048) RGBA PNG stored uncompressed, in base64, plus the JSON around it.
# The JSON routes keep the same cap as the upload route: their images travel as base64, a
# third larger than the same file in a multipart upload, so a tighter JSON cap would refuse
# images that /v1/images/edits accepts. The work per JSON body is bounded by value count.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Open connections; beyond it the quietest idle one is closed, or a new one gets 503.
# Lowered at start when the open-file limit leaves less room (connections.connection_cap).
MAX_CONNECTIONS = 1024
# Seconds a client has to send a request's headers, and to stay idle between requests.
HEADER_TIMEOUT = 15.0
# Seconds a client has to send a whole body once its headers are in: 32 MB at 2.2 Mbit/s.
BODY_TIMEOUT = 120.0
_ORIGIN = re.compile(r"https?://[a-z0-9.-]+(:\d{1,5})?|https?://\[[0-9a-f:.]+\](:\d{1,5})?")


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    output_dir: Path = field(default_factory=lambda: Path("outputs"))
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_body_bytes: int = MAX_BODY_BYTES
    cors_origin: str | None = None  # the one other origin allowed to call the API (--cors-origin)
    max_connections: int = MAX_CONNECTIONS
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    reference_pixel_budget: int = DEFAULT_REFERENCE_PIXEL_BUDGET
    preview_every: float | None = DEFAULT_PREVIEW_EVERY  # seconds between a job's previews; None: off

    @property
    def loopback(self) -> bool:
        """Bound to loopback only: then Host headers must name loopback too (DNS rebinding)."""
        return is_loopback_name(self.host)

    def exposure_warning(self) -> str | None:
        """The warning to print when the server is reachable from elsewhere without a key."""
        if self.loopback or self.api_key:
            return None
        return (f"serving on {self.host} without an API key: anyone who can reach this machine can "
                f"generate images and read them; set --api-key or FLUX2_API_KEY")


def is_loopback_name(host: str) -> bool:
    """True for localhost, *.localhost and loopback addresses (a Host header's name part)."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_origin(value: str) -> str:
    """A ``--cors-origin`` value as browsers send it in ``Origin``: scheme://host[:port], no path."""
    origin = value.strip().lower().rstrip("/")
    if not _ORIGIN.fullmatch(origin):
        raise InvalidRequest(f"--cors-origin must be an origin such as https://app.example.com "
                             f"(scheme and host, no path; got {value[:60]!r})")
    return origin
