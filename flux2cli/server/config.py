"""The server's settings, fixed when it starts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from flux2cli.server.worker import DEFAULT_QUEUE_SIZE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2222
# Enough for a 4 MP (2048x2048) RGBA PNG stored uncompressed, in base64, plus the JSON around it.
MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    output_dir: Path = field(default_factory=lambda: Path("outputs"))
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_body_bytes: int = MAX_BODY_BYTES

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
