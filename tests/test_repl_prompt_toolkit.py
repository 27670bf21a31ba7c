"""The REPL's prompt_toolkit layer, driven through a pipe input, generating with the tiny model."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from flux2cli.encoder.cache import CachedEncoder
from flux2cli.pipeline.registry import get_model
from flux2cli.repl.app import HISTORY_FILE, ReplApp, TerminalReader, open_history
from flux2cli.repl.completion import ReplCompleter
from flux2cli.repl.session import ReplSession
from flux2cli.settings import home_dir
from test_repl_session import FakeEngine

TINY = get_model("tiny")
UP, DOWN, CTRL_C, CTRL_D, CTRL_R = "\x1b[A", "\x1b[B", "\x03", "\x04", "\x12"


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class ScriptedReader:
    """Types the next step's keys when the app asks for a line, as a person at the prompt would."""

    def __init__(self, reader: TerminalReader, pipe, steps):
        self.reader, self.pipe, self.steps = reader, pipe, list(steps)

    def read(self):
        if self.steps:
            step = self.steps.pop(0)
            step(self) if callable(step) else self.pipe.send_text(step)
        return self.reader.read()


def tab_then_enter(typed: str, completed: str):
    """Tab completes asynchronously, so Enter is typed once the line shows the completion."""
    def step(scripted: ScriptedReader) -> None:
        scripted.pipe.send_text(typed + "\t")

        def enter_when_completed():
            buffer = scripted.reader.prompt_session.default_buffer
            try:
                wait_until(lambda: buffer.text == completed, 20, f"Tab to complete {typed!r}")
            finally:
                scripted.pipe.send_text("\r")

        threading.Thread(target=enter_when_completed, daemon=True).start()
    return step


def drive(engine, steps, output_dir: Path):
    """Run the app on a prompt_toolkit session fed by ``steps``; returns what it showed."""
    session = ReplSession(TINY, output_dir=output_dir)
    out, err = io.StringIO(), io.StringIO()
    # force_terminal: the per-step progress bar renders, as it does in a terminal
    app = ReplApp(session, engine, output_dir, out=Console(file=out, width=300, highlight=False),
                  err=Console(file=err, width=300, highlight=False, force_terminal=True))
    with create_pipe_input() as pipe:
        reader = TerminalReader(session, open_history(), input=pipe, output=DummyOutput())
        code = app.run(ScriptedReader(reader, pipe, steps))
    return code, out.getvalue(), err.getvalue(), session, reader


def read_sidecar(path: Path) -> dict[str, str]:
    return dict(re.match(r"# ([^:]+): (.*)", line).groups() for line in path.read_text().splitlines())


@pytest.mark.slow
def test_a_session_generates_repeats_and_changes_settings_with_the_tiny_model(tiny_engine, tmp_path, monkeypatch):
    first, second = "a purple triangle on a yellow background", "a blue square on a white background"
    # an empty cache of its own: other tests share this engine and may have used these prompts
    monkeypatch.setattr(tiny_engine, "encoder", CachedEncoder(tiny_engine.encoder.encoder))
    assert not tiny_engine.is_cached(first) and not tiny_engine.is_cached(second)
    encoded = []  # prompts the real text encoder ran on; `same` and `reseed` must not add any
    real_encode = tiny_engine.encoder.encoder.encode

    def spy(key):
        encoded.append(key.prompt)
        return real_encode(key)

    monkeypatch.setattr(tiny_engine.encoder.encoder, "encode", spy)
    code, out, err, session, reader = drive(tiny_engine, [
        f"{first}\r",
        "same\r",
        "reseed 42\r",
        f"half typed{CTRL_C}/steps 3\r",  # Ctrl-C at the prompt drops the line, the loop goes on
        tab_then_enter("/sq", "/square"),
        f"{second} /portrait /2k\r",
        CTRL_D,
    ], tmp_path / "out")

    assert code == 0
    assert encoded == [first, second]
    lines = out.splitlines()
    assert len(lines) == 4, out
    saved = [Path(line.split("  ")[0]) for line in lines]
    sidecars = [read_sidecar(path.with_suffix(".prompt")) for path in saved]
    assert [s["Raw input"] for s in sidecars] == [first, "same", "reseed 42", f"{second} /portrait /2k"]
    assert [s["Prompt"] for s in sidecars] == [first, first, first, second]
    assert [int(s["Steps"]) for s in sidecars] == [TINY.default_steps] * 3 + [3]
    w, h = TINY.dimensions("landscape", "1mp")
    pw, ph = TINY.dimensions("portrait", "2mp")
    assert [s["Dimensions"] for s in sidecars] == [f"{w}x{h}"] * 3 + [f"{pw}x{ph}"]
    assert [Image.open(path).size for path in saved] == [(w, h)] * 3 + [(pw, ph)]
    seeds = [int(s["Seed"]) for s in sidecars]
    assert seeds[0] != seeds[1] and seeds[2] == 42
    for sidecar, line in zip(sidecars[1:3], lines[1:3]):  # cached embeddings: no encoding
        assert sidecar["Timings"].startswith("encoding=0.00s") and "encoding 0.00s" in line
    assert f"seed {seeds[0]}" in lines[0] and "diffusion" in lines[0] and "save" in lines[0]

    assert "now: 3 steps" in err and "now: square 1k" in err and f"now: portrait 2k ({pw}x{ph})" in err
    assert f"{TINY.default_steps}/{TINY.default_steps}" in err  # the per-step progress bar
    assert "Traceback" not in out + err and "half typed" not in err
    assert session.last_seed == seeds[3]
    assert f"last seed {seeds[3]}" in reader.prompt_session.bottom_toolbar()

    history = (home_dir() / HISTORY_FILE).read_text()
    for line in (first, "same", "reseed 42", "/steps 3", "/square"):
        assert f"+{line}\n" in history
    assert "half typed" not in history


def test_help_and_the_toolbar_show_the_loaded_models_sizes(tmp_path):
    code, out, err, session, reader = drive(FakeEngine(), ["/help\r", "/square /2k\r", CTRL_D], tmp_path)
    assert code == 0, err
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("* /")}
    for orientation in ("square", "portrait", "landscape", "16:9"):
        sizes = [TINY.dimensions(orientation, size) for size in ("1mp", "2mp", "4mp")]
        assert ", ".join(f"{w}x{h} at {k}" for (w, h), k in zip(sizes, ("1k", "2k", "4k"))) in rows[f"/{orientation}"]
    assert "64x64 at 1k" in rows["/square"] and "1024" not in out
    # at tiny's scale 16:9 rounds to landscape's multiples of 16: /help says so
    assert TINY.dimensions("16:9", "1mp") == TINY.dimensions("landscape", "1mp")
    assert "the same as /landscape at this model's scale" in rows["/16:9"]
    assert "square 2k (128x128)" in reader.prompt_session.bottom_toolbar()


def test_history_survives_the_session_with_up_and_ctrl_r(tmp_path):
    code, *_ = drive(FakeEngine(), ["/steps 5\r", "/portrait\r", "/batch 2\r", CTRL_D], tmp_path)
    assert code == 0
    code, out, err, session, _ = drive(FakeEngine(), [
        f"{UP}\r",  # the last line of the previous session: /batch 2
        f"{CTRL_R}steps\r\r",  # reverse search finds /steps 5; Enter takes it, Enter runs it
        f"{UP}{UP}{UP}{DOWN}\r",  # /steps 5, /batch 2, /portrait, back down to /batch 2
        CTRL_D,
    ], tmp_path)
    assert code == 0
    assert (session.settings.batch, session.settings.steps, session.settings.orientation) == (2, 5, "landscape")
    assert err.count("now: batch 2") == 2 and err.count("now: 5 steps") == 1


@pytest.mark.slow
def test_a_reference_image_through_the_prompt(tiny_engine, tmp_path):
    reference = tmp_path / "green.png"
    Image.new("RGB", (64, 64), (30, 180, 60)).save(reference)
    code, out, err, *_ = drive(tiny_engine, [
        f"/image {reference}\r", "/strength 0.5\r", "a red circle on a green background /square\r", CTRL_D,
    ], tmp_path / "out")
    assert code == 0, err
    [line] = out.splitlines()
    metadata = json.loads(Image.open(line.split("  ")[0]).text["flux2"])
    assert metadata["reference_images"] == [str(reference)] and metadata["strength"] == 0.5


@pytest.mark.parametrize("text,expected", [
    ("/po", ["/portrait"]),
    ("/s", ["/steps", "/square", "/seed", "/strength", "/show"]),
    ("a sunset /s", ["/steps", "/square", "/seed"]),  # inside a prompt: modifiers only
    ("a sunset /2", ["/2k", "/2mp"]),
    ("sa", ["same"]),
    ("re", ["reseed"]),
    ("he", ["help"]),
    ("a s", []),  # words complete only at the start of a line
    ("/seed ", ["random"]),
    ("/steps", []),
])
def test_completion_comes_from_the_command_table(text, expected):
    found = ReplCompleter().get_completions(Document(text), CompleteEvent(completion_requested=True))
    assert [c.text for c in found] == expected


def test_paths_complete_after_image(tmp_path):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "cat.png").write_bytes(b"")
    (tmp_path / "refs" / "car.jpg").write_bytes(b"")
    (tmp_path / "refs" / "cab.WEBP").write_bytes(b"")
    (tmp_path / "refs" / "cat.prompt").write_bytes(b"")  # a sidecar is no reference image
    (tmp_path / "refs" / "cave.txt").write_bytes(b"")
    (tmp_path / "refs" / "cars").mkdir()  # a folder may hold images
    for command in ("/image", "/mask"):
        text = f"{command} {tmp_path}/refs/ca"
        found = list(ReplCompleter().get_completions(Document(text), CompleteEvent(completion_requested=True)))
        assert sorted(c.text for c in found) == ["b.WEBP", "r.jpg", "rs", "t.png"]
    text = f"/lora {tmp_path}/refs/cav"  # other paths still complete every file
    found = list(ReplCompleter().get_completions(Document(text), CompleteEvent(completion_requested=True)))
    assert [c.text for c in found] == ["e.txt"]
    assert "/steps" not in [c.text for c in ReplCompleter().get_completions(
        Document("/image /s"), CompleteEvent(completion_requested=True))]


def test_an_unwritable_home_keeps_history_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FLUX2_HOME", str(blocker / "home"))  # a folder inside a file: cannot exist
    err = io.StringIO()
    history = open_history(Console(file=err, width=300))
    assert type(history).__name__ == "InMemoryHistory" and "history is not saved" in err.getvalue()
