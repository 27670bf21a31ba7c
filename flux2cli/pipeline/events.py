"""The one progress event: feeds the CLI bar, the REPL line and the server's events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class StepEvent:
    step: int  # 1-based: the step that just finished
    total_steps: int
    batch: int  # images denoised together in this step


StepCallback = Callable[[StepEvent], None]
