"""The terminal layer: read a line, let the session decide, run generations, print.

A generation runs in a worker thread while the main thread waits for it. Between prompts
the terminal is in its normal (cooked) mode, so Ctrl-C is a SIGINT to the main thread:
while a generation runs, our handler turns it into the engine's cancel Event, and the
engine stops at the end of the current step. At the prompt, prompt_toolkit reads Ctrl-C
as a key and raises KeyboardInterrupt from ``prompt()``: the line is dropped.

In a terminal, results (saved paths, with seed and timings) and the answers to /help and
/show go to stdout; progress, notes and errors go to stderr. From a pipe (a script), stdout
gets the saved paths alone, one a line, so `... | flux2 repl | xargs ...` reads nothing
else; everything else goes to stderr, and an error anywhere in the script makes the exit
status 1 once the script has run to its end.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.markup import escape

from flux2cli.console import ctrl_c_sets, format_timings, keys_unechoed, previews_wanted, step_progress, thumbnail
from flux2cli.console import stderr as default_err
from flux2cli.errors import Flux2Error, GenerationCancelled
from flux2cli.pipeline.events import StepCallback
from flux2cli.pipeline.request import GenerationRequest
from flux2cli.repl.actions import Action, Generate, Quit, Reply
from flux2cli.repl.session import ReplSession
from flux2cli.settings import debug_enabled, home_dir

HISTORY_FILE = "repl_history"
PROMPT = "flux2> "


class LineReader(Protocol):
    def read(self) -> str | None:
        """The next line typed, or None at the end of input (Ctrl-D, end of a pipe)."""


class TerminalReader:
    """prompt_toolkit: history (Up/Down, Ctrl-R), Tab completion, a status toolbar."""

    def __init__(self, session: ReplSession, history: Any, *, input: Any = None, output: Any = None):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.output import create_output

        from flux2cli.repl.completion import ReplCompleter

        if output is None:
            # `flux2 repl > paths.txt`: the prompt stays on the terminal (stderr), the file
            # gets the saved paths only.
            output = create_output(always_prefer_tty=True)
        self.prompt_session = PromptSession(
            history=history,
            completer=ReplCompleter(),
            # Tab only: a menu popping up while typing races with fast typing and pastes.
            complete_while_typing=False,
            bottom_toolbar=session.status_line,  # called at each redraw: always current
            input=input,
            output=output,
        )

    def read(self) -> str | None:
        while True:
            try:
                return self.prompt_session.prompt(PROMPT)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line
            except EOFError:
                return None


class StreamReader:
    """Piped input: one prompt or command per line, for scripting."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def read(self) -> str | None:
        line = self._stream.readline()
        return line.rstrip("\r\n") if line else None


def open_history(err: Console = default_err) -> Any:
    """The history file in the user data folder (FLUX2_HOME); in memory if it is not writable."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    class SafeFileHistory(FileHistory):
        def store_string(self, string: str) -> None:
            try:
                super().store_string(string)
            except OSError:
                pass  # a full disk must not end the session; this line is still in memory

    path = home_dir() / HISTORY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        return SafeFileHistory(str(path))
    except OSError as error:
        err.print(f"[yellow]note:[/] history is not saved: cannot write {escape(str(path))} "
                  f"({escape(error.strerror or str(error))})")
        return InMemoryHistory()


class ReplApp:
    def __init__(self, session: ReplSession, engine: Any, output_dir: Path, *,
                 out: Console | None = None, err: Console | None = None, preview: bool | None = None,
                 piped: bool = False):
        self.session = session
        self.piped = piped  # a script: stdout is for the saved paths only, an error fails the run
        self.keyboard = None if piped else sys.stdin  # its echo is off while a generation runs
        self.failed = False
        self.engine = engine
        self.output_dir = output_dir
        self.out = out or Console(highlight=False)
        self.err = err or default_err
        self.preview = previews_wanted(self.err, preview)  # preview: False for --no-preview, else None

    def banner(self) -> None:
        self.err.print(f"{escape(self.session.spec.display_name)} ready. Type a prompt; /help lists the "
                       f"commands; quit or Ctrl-D exits. Images go to {escape(str(self.output_dir))}",
                       soft_wrap=True)

    def run(self, reader: LineReader) -> int:
        """Read and act until quit or the end of input; the exit status: 1 for a script that
        had an error, else 0."""
        while True:
            line = reader.read()
            if line is None:
                return self._status()
            try:
                if isinstance(self.execute(line), Quit):
                    return self._status()
            except KeyboardInterrupt:
                # Ctrl-C outside a generation's wait (while printing, say): back to the prompt.
                self.err.print("interrupted")

    def _status(self) -> int:
        return 1 if self.piped and self.failed else 0

    def execute(self, line: str) -> Action:
        """Handle one line; every failure becomes one printed line and the loop goes on."""
        try:
            action = self.session.handle(line)
            if isinstance(action, Reply):
                self._reply(action)
            elif isinstance(action, Generate):
                self._generate(action)
            return action
        except Flux2Error as error:
            self._error(str(error), error)
        except OSError as error:  # saving: a full disk, a folder that cannot be written
            self._error(f"could not write to {self.output_dir}: {error.strerror or error}", error)
        except Exception as error:  # a bug must not end the session (FLUX2_DEBUG shows it)
            self._error(f"unexpected {type(error).__name__}: {error} "
                        "(FLUX2_DEBUG=1 shows the traceback)", error)
        return None

    # -- generation --------------------------------------------------------------------
    def _generate(self, action: Generate) -> None:
        request = action.request
        for note in action.notes:
            self.err.print(note, style="dim", markup=False, soft_wrap=True)
        cancel, done = threading.Event(), threading.Event()
        outcome: dict[str, Any] = {}

        def work(on_step: StepCallback) -> None:
            try:
                outcome["saved"] = self.engine.generate_and_save(
                    request, self.output_dir, on_step=on_step, cancel=cancel)
            except BaseException as error:  # handed to the main thread, raised there
                outcome["error"] = error
            finally:
                done.set()

        with self._progress(request) as on_step, ctrl_c_sets(cancel), keys_unechoed(self.keyboard):
            threading.Thread(target=work, args=(on_step,), name="flux2-generate", daemon=True).start()
            self._wait(done, cancel)

        error = outcome.get("error")
        if isinstance(error, GenerationCancelled):
            self.err.print(f"[yellow]{escape(str(error))}[/]; nothing was saved")
            return
        if error is not None:
            raise error
        self.session.record(request, [saved.path for saved in outcome["saved"]])
        for saved in outcome["saved"]:
            result = f"{saved.path}  seed {saved.seed}  ({format_timings(saved.timings)})"
            if self.piped:
                self.out.print(str(saved.path), markup=False, soft_wrap=True)
                self.err.print(result, style="dim", markup=False, soft_wrap=True)
            else:
                self.out.print(result, markup=False, soft_wrap=True)
        if self.preview and outcome["saved"]:
            thumbnail(self.err, outcome["saved"][0].path)

    def _wait(self, done: threading.Event, cancel: threading.Event) -> None:
        """Wait for the worker, saying once when a Ctrl-C asked it to stop."""
        announced = False
        while True:
            try:
                while not done.wait(0.1):
                    if cancel.is_set() and not announced:
                        announced = True
                        self.err.print("cancelling at the end of this step…")
                return
            except KeyboardInterrupt:  # only where ctrl_c_sets could not take SIGINT over
                cancel.set()

    def _progress(self, request: GenerationRequest):
        """A per-step bar on stderr (the image forming under it), gone when the steps are done."""
        label = f"{request.width}x{request.height}" + (f" x{request.batch}" if request.batch > 1 else "")
        return step_progress(label, request.steps, console=self.err, preview=self.preview)

    # -- output ----------------------------------------------------------------------
    def _reply(self, reply: Reply) -> None:
        if reply.kind == "error":
            self._error(reply.text)
        elif reply.kind == "note" or self.piped:
            self.err.print(reply.text, style="dim" if reply.kind == "note" else None, markup=False, soft_wrap=True)
        else:
            self.out.print(reply.text, markup=False, soft_wrap=True)

    def _error(self, message: str, error: BaseException | None = None) -> None:
        self.failed = True
        if error is not None and debug_enabled():
            import traceback

            traceback.print_exception(error)
        self.err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


def run_repl(session: ReplSession, engine: Any, output_dir: Path, *, stdin: TextIO | None = None,
             preview: bool | None = None) -> int:
    """The loop behind `flux2 repl`: prompt_toolkit in a terminal, plain lines from a pipe."""
    stdin = stdin or sys.stdin
    if stdin is None:  # started with stdin closed: nothing to read
        return 0
    app = ReplApp(session, engine, output_dir, preview=preview, piped=not stdin.isatty())
    if app.piped:
        return app.run(StreamReader(stdin))
    reader = TerminalReader(session, open_history(app.err))
    app.banner()
    return app.run(reader)
