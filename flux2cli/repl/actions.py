"""What the session asks the terminal layer to do after one typed line."""

from __future__ import annotations

from dataclasses import dataclass

from flux2cli.pipeline.request import GenerationRequest


@dataclass(frozen=True)
class Reply:
    """Text to show. ``kind``: "output" (/help, /show) goes to stdout; "note" (a change of
    settings) and "error" go to stderr, so a pipe's stdout carries only results."""

    text: str
    kind: str = "output"

    @property
    def error(self) -> bool:
        return self.kind == "error"


@dataclass(frozen=True)
class Generate:
    """Run ``request``; ``notes`` (settings that changed, ignored values) are shown first."""

    request: GenerationRequest
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Quit:
    pass


Action = Reply | Generate | Quit | None  # None: an empty line, nothing to do
