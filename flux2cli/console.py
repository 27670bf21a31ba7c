"""Terminal output shared by the commands and the REPL: messages on stderr, a per-step progress bar.

It sits below both (``flux2cli.console``, not under ``commands``) so that the REPL does not
reach into the command layer. It imports rich, so the commands import it inside their
functions: ``flux2 --help`` must not pay for rich.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

from flux2cli.pipeline.events import StepCallback, StepEvent

stderr = Console(stderr=True, highlight=False)


def notice(message: str) -> None:
    """One line on stderr. Messages are plain text and may quote a server's answer or a
    prompt, so they are never read as rich markup."""
    from rich.markup import escape

    stderr.print(f"[yellow]note:[/] {escape(message)}", markup=True)


@contextmanager
def step_progress(label: str, total_steps: int) -> Iterator[StepCallback]:
    """A progress bar on stderr; yields the ``on_step`` callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=stderr, transient=True)
    task = progress.add_task(label, total=total_steps)

    def on_step(event: StepEvent) -> None:
        progress.update(task, completed=event.step)

    with progress:
        yield on_step


def format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {timings[name]:.2f}s" for name in ("encoding", "diffusion", "save")
                     if name in timings)
