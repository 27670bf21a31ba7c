"""Terminal output shared by the commands and the REPL: messages on stderr, a per-step progress bar.

It sits below both (``flux2cli.console``, not under ``commands``) so that the REPL does not
reach into the command layer. It imports rich, so the commands import it inside their
functions: ``flux2 --help`` must not pay for rich.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape

from flux2cli.pipeline.events import StepCallback, StepEvent

stderr = Console(stderr=True, highlight=False)


def notice(message: str) -> None:
    """One line on stderr. Messages are plain text and may quote a server's answer or a
    prompt, so they are never read as rich markup."""
    stderr.print(f"[yellow]note:[/] {escape(message)}", markup=True)


PREVIEW_CELLS = 32  # columns of a terminal preview; each cell shows two pixels, one above the other


def previews_wanted(console: Console, flag: bool | None) -> bool:
    """Draw previews only on a colour terminal, unless --no-preview or FLUX2_PREVIEW=0."""
    from flux2cli.settings import resolve

    if not console.is_terminal or console.no_color or console.color_system is None:
        return False
    wanted = resolve("preview", flag)
    return wanted is None or bool(wanted)


def half_blocks(image, cells: int = PREVIEW_CELLS):
    """A PIL image as rich text: '▀' cells, the top pixel in the foreground colour and
    the bottom one in the background colour (true colour where the terminal has it)."""
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    rows = max(2, round(cells * image.height / image.width / 2) * 2)
    pixels = image.convert("RGB").resize((cells, rows)).load()
    text = Text()
    for y in range(0, rows, 2):
        for x in range(cells):
            text.append("▀", Style(color=Color.from_rgb(*pixels[x, y]), bgcolor=Color.from_rgb(*pixels[x, y + 1])))
        if y + 2 < rows:
            text.append("\n")
    return text


@contextmanager
def step_progress(label: str, total_steps: int, *, console: Console = stderr,
                  preview: bool = False) -> Iterator[StepCallback]:
    """A progress bar on ``console``, with the image forming under it when ``preview``;
    yields the ``on_step`` callback (safe to call from the generating thread)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not console.is_terminal:  # a log file gets no bar frames
        yield lambda event: None
        return

    class PreviewProgress(Progress):
        drawing = None

        def get_renderables(self):
            yield from super().get_renderables()
            if self.drawing is not None:
                yield self.drawing

    progress = PreviewProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("steps"), TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task(escape(label), total=total_steps)
    every = max(1, total_steps // 6)  # a few redraws a generation, whatever its length

    def on_step(event: StepEvent) -> None:
        if preview and event.preview is not None and (event.step % every == 0 or event.step == event.total_steps):
            image = event.preview()
            if image is not None:
                progress.drawing = half_blocks(image)
        if event.step >= event.total_steps:  # the VAE decodes and the files are written: seconds, not a hang
            progress.update(task, completed=event.step, description=f"{escape(label)} decoding…")
            progress.refresh()
        else:
            progress.update(task, completed=event.step)

    with progress:
        yield on_step


@contextmanager
def ctrl_c_sets(cancel: threading.Event) -> Iterator[None]:
    """While a generation runs, Ctrl-C (SIGINT) sets ``cancel`` instead of raising.

    A KeyboardInterrupt can land anywhere, even in Thread.start() before the wait that
    would catch it, and leave a worker running unasked; a handler that only sets the
    Event has no such window. The engine stops at the end of the current step.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; the REPL's wait catches KeyboardInterrupt
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def keys_unechoed(keyboard) -> Iterator[None]:
    """While a generation runs, what is typed on ``keyboard`` (a terminal's stdin; None: no
    terminal) is not echoed over the progress bar; it stays in the terminal's input and reaches
    the next prompt. Ctrl-C still signals: only ECHO is turned off."""
    try:
        import termios

        fd = keyboard.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, AttributeError, OSError, ValueError) + _termios_error():  # a pipe, a file, not POSIX
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def _termios_error() -> tuple[type[BaseException], ...]:
    try:
        import termios
    except ImportError:
        return ()
    return (termios.error,)


def thumbnail(console: Console, path) -> None:
    """The saved image, small, under its file name (only where previews are drawn)."""
    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((PREVIEW_CELLS * 4, PREVIEW_CELLS * 4))
        console.print(half_blocks(image))


def format_timings(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {timings[name]:.2f}s" for name in ("encoding", "diffusion", "save")
                     if name in timings)
