"""`flux2 repl`: the interactive prompt loop (arrives with its own issue)."""

from __future__ import annotations

from flux2cli.errors import NotSupportedYet


def repl() -> None:
    """Interactive prompt loop with history, completion and cached embeddings (not yet)."""
    raise NotSupportedYet("`flux2 repl` is not available yet; use `flux2 generate` for now")
