"""`flux2 serve`: the web UI and REST API (arrives with its own issue)."""

from __future__ import annotations

from flux2cli.errors import NotSupportedYet


def serve() -> None:
    """Web UI and REST API on port 2222 (not yet)."""
    raise NotSupportedYet("`flux2 serve` is not available yet; use `flux2 generate` for now")
