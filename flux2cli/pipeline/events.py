"""The one progress event: feeds the CLI bar, the REPL line and the server's events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class StepEvent:
    step: int  # 1-based: the step that just finished
    total_steps: int
    batch: int  # images denoised together in this step
    # Draws a preview of the image so far (a small PIL image) when called, inside the
    # callback; None where the engine has none (fakes). Costs only when someone asks.
    preview: Callable[[], Any] | None = field(default=None, compare=False, repr=False)


StepCallback = Callable[[StepEvent], None]
