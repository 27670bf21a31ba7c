"""`flux2 repl` as a person runs it: a real process in a real terminal (tmux), and from a pipe."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from flux2cli.pipeline.registry import get_model
from flux2cli.repl.app import HISTORY_FILE

TINY = get_model("tiny")
FIRST = "a red circle on a white background"
SECOND = "a blue square on a white background"
RESULT_LINE = re.compile(r"\.png  seed \d+  \(encoding [\d.]+s, diffusion [\d.]+s, save [\d.]+s\)")


def wait_until(condition, timeout: float, what: str, show=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{show()}")
        time.sleep(0.1)


def read_sidecar(path: Path) -> dict[str, str]:
    return dict(re.match(r"# ([^:]+): (.*)", line).groups() for line in path.read_text().splitlines())


class Tmux:
    """One tmux server on its own socket, one window running ``command``."""

    def __init__(self, socket: Path, command: str, env: dict[str, str]):
        self.base = ["tmux", "-S", str(socket), "-f", "/dev/null"]  # no user tmux.conf
        # The trailing sleep keeps the pane, and its last screen, readable after the exit.
        subprocess.run([*self.base, "new-session", "-d", "-s", "repl", "-x", "200", "-y", "50",
                        f"{command}; sleep 600"], check=True, env=env)

    def send(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "repl", *keys], check=True)

    def type_line(self, text: str) -> None:
        self.send("-l", text)  # literally: "/16:9" or ";" are not key names
        self.send("Enter")

    def screen(self) -> str:
        # -S -: the scrollback too, so early lines stay visible however long the session
        return subprocess.run([*self.base, "capture-pane", "-p", "-J", "-S", "-", "-t", "repl"],
                              check=True, capture_output=True, text=True).stdout

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it)")
def test_repl_in_a_real_terminal(tmp_path):
    out_dir, home = tmp_path / "out", tmp_path / "home"
    env = {**os.environ, "FLUX2_HOME": str(home), "FLUX2_DEBUG": "", "TERM": "xterm-256color"}
    command = (f"{shlex.quote(sys.executable)} -m flux2cli repl --model tiny --output-dir {shlex.quote(str(out_dir))}"
               "; echo FLUX2_EXIT=$?")
    tmux = Tmux(tmp_path / "tmux.sock", command, env)
    pngs = lambda: sorted(out_dir.glob("*.png"), key=lambda p: p.stat().st_mtime_ns)  # noqa: E731

    def generate(line: str, count: int) -> None:
        tmux.type_line(line)
        wait_until(lambda: len(pngs()) == count and len(list(out_dir.glob("*.prompt"))) == count,
                   180, f"image {count} after {line!r}", tmux.screen)
        wait_until(lambda: len(RESULT_LINE.findall(tmux.screen())) == count, 30, "the saved path on screen",
                   tmux.screen)

    try:
        wait_until(lambda: "flux2>" in tmux.screen(), 180, "the prompt", tmux.screen)
        generate(FIRST, 1)
        generate("same", 2)
        generate("reseed 42", 3)
        tmux.type_line("/steps 12")
        wait_until(lambda: "now: 12 steps" in tmux.screen(), 30, "/steps to answer", tmux.screen)
        generate(f"{SECOND} /portrait /2k", 4)

        # Ctrl-C while generating stops that generation; Ctrl-C at the prompt clears the line.
        tmux.type_line("a green triangle on a black background /4k /steps 50")
        wait_until(lambda: re.search(r"\d+/50 steps", tmux.screen()), 120, "the progress bar", tmux.screen)
        tmux.send("C-c")
        wait_until(lambda: "flux2>" in tmux.screen().partition("; nothing was saved")[2], 120,
                   "the cancel, then the prompt", tmux.screen)
        tmux.send("-l", "never run this")
        wait_until(lambda: "never run this" in tmux.screen(), 30, "the typed text", tmux.screen)
        tmux.send("C-c")
        wait_until(lambda: "flux2>" in tmux.screen().partition("never run this")[2], 30,
                   "a fresh prompt", tmux.screen)
        tmux.type_line("quit")
        screen = wait_until(lambda: "FLUX2_EXIT=" in (s := tmux.screen()) and s, 60, "the exit", tmux.screen)
    finally:
        final = tmux.screen()
        tmux.kill()

    assert "FLUX2_EXIT=0" in screen
    assert "Traceback" not in final and "error:" not in final, final
    assert "generation cancelled at step" in final
    assert len(pngs()) == 4  # the cancelled generation saved nothing

    by_raw = {}
    for png in pngs():
        sidecar = read_sidecar(png.with_suffix(".prompt"))
        by_raw[sidecar["Raw input"]] = (png, sidecar)
        assert f"{png}  seed {sidecar['Seed']}" in final  # each saved path and seed was shown
    assert set(by_raw) == {FIRST, "same", "reseed 42", f"{SECOND} /portrait /2k"}
    w, h = TINY.dimensions("landscape", "1mp")
    for raw in (FIRST, "same", "reseed 42"):
        png, sidecar = by_raw[raw]
        assert (sidecar["Prompt"], sidecar["Steps"], sidecar["Dimensions"]) == (FIRST, str(TINY.default_steps), f"{w}x{h}")
        assert Image.open(png).size == (w, h)
    assert by_raw["same"][1]["Seed"] != by_raw[FIRST][1]["Seed"]
    assert by_raw["reseed 42"][1]["Seed"] == "42"
    for raw in ("same", "reseed 42"):  # cached embeddings: the encoder did not run
        assert by_raw[raw][1]["Timings"].startswith("encoding=0.00s")
    png, sidecar = by_raw[f"{SECOND} /portrait /2k"]
    pw, ph = TINY.dimensions("portrait", "2mp")
    assert (sidecar["Prompt"], sidecar["Steps"], sidecar["Dimensions"]) == (SECOND, "12", f"{pw}x{ph}")
    assert Image.open(png).size == (pw, ph)

    history = (home / HISTORY_FILE).read_text()
    assert all(f"+{line}\n" in history for line in (FIRST, "same", "reseed 42", "/steps 12", "quit"))
    assert "never run this" not in history


@pytest.mark.slow
def test_piped_input_is_one_line_per_prompt(tmp_path):
    env = {**os.environ, "FLUX2_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "flux2cli", "repl", "--model", "tiny", "--steps", "2", "-o", str(tmp_path)],
        input=f"{FIRST}\n/bogus\n/show\nreseed 7\n/steps 0\n", capture_output=True, text=True, env=env,
        timeout=300)
    assert result.returncode == 1, result.stderr  # the script had errors: it ran to its end, then failed
    paths = [Path(line) for line in result.stdout.splitlines()]  # stdout carries the saved paths only
    assert len(paths) == 2 and all(path.is_file() and path.suffix == ".png" for path in paths)
    assert read_sidecar(paths[1].with_suffix(".prompt"))["Seed"] == "7"
    assert f"{paths[1]}  seed 7  (" in result.stderr  # seed and timings: on stderr
    assert "model      flux2-tiny" in result.stderr  # /show's answer
    assert "error: unknown command /bogus" in result.stderr
    assert "error: steps must be between 1 and 50" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / HISTORY_FILE).exists()  # a script's lines are not history


def test_a_bad_steps_option_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "flux2cli", "repl", "--model", "tiny", "--steps", "0"],
                            input="", capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: steps must be between 1 and 50 for flux2-tiny (got 0)"


def _recorded_repl(tmp_path, out_dir, env):
    """`flux2 repl --model tiny` in tmux, everything it writes to the terminal recorded in a file
    (tmux pipe-pane), so frames the bar erases again are seen too."""
    command = (f"{shlex.quote(sys.executable)} -m flux2cli repl --model tiny --output-dir {shlex.quote(str(out_dir))}"
               "; echo FLUX2_EXIT=$?")
    tmux = Tmux(tmp_path / "tmux.sock", command, env)
    stream = tmp_path / "stream.txt"
    subprocess.run([*tmux.base, "pipe-pane", "-o", "-t", "repl", f"cat >> {shlex.quote(str(stream))}"], check=True)
    return tmux, stream


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it)")
@pytest.mark.parametrize("no_color", [False, True])
def test_the_repl_draws_the_image_forming_and_a_thumbnail(tmp_path, no_color):
    """In colour: half-block cells under the bar while it runs, a thumbnail after the path,
    and the prompt works after both. NO_COLOR: none of it. Everything the REPL writes to the
    terminal is recorded (tmux pipe-pane), so frames the bar erases again are seen too."""
    out_dir = tmp_path / "out"
    env = {**os.environ, "FLUX2_HOME": str(tmp_path / "home"), "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    tmux, stream = _recorded_repl(tmp_path, out_dir, env)
    try:
        wait_until(lambda: "flux2>" in tmux.screen(), 180, "the prompt", tmux.screen)
        tmux.type_line(f"{FIRST} /steps 24")
        wait_until(lambda: RESULT_LINE.search(tmux.screen()), 240, "the saved path", tmux.screen)
        tmux.type_line("/show")
        wait_until(lambda: "steps" in tmux.screen().partition("/show")[2], 30, "/show to answer", tmux.screen)
        tmux.type_line("quit")
        wait_until(lambda: "FLUX2_EXIT=0" in tmux.screen(), 60, "the exit", tmux.screen)
        final = tmux.screen()
    finally:
        tmux.kill()
    written = stream.read_text(errors="replace")
    during, _, after = written.partition(".png  seed ")
    assert after, written[-2000:]
    assert "Traceback" not in final and "error:" not in final, final
    if no_color:
        assert "▀" not in written
        return
    # while it ran: frames of the bar with cells in 24-bit colour under it
    assert re.search(r"\d+/24", during), during[-2000:]  # the bar (colour codes stand around "steps")
    assert during.count("▀") >= 32 * 2 and re.search(r"\x1b\[[0-9;]*38;2;\d+;\d+;\d+", during), during[-2000:]
    # after the path: a thumbnail of rows of 32 cells, then the prompt again (it answered /show)
    assert after.partition("flux2>")[0].count("▀") >= 32 * 4, after[:3000]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it)")
def test_keys_typed_during_a_generation_leave_the_bar_alone_and_decoding_is_shown(tmp_path):
    """Everything written to the terminal is recorded (tmux pipe-pane): while the steps run,
    typed keys are not echoed into the bar; after the last step the bar says "decoding…"."""
    out_dir = tmp_path / "out"
    env = {**os.environ, "FLUX2_HOME": str(tmp_path / "home"), "TERM": "xterm-256color", "FLUX2_PREVIEW": "0"}
    tmux, stream = _recorded_repl(tmp_path, out_dir, env)
    try:
        wait_until(lambda: "flux2>" in tmux.screen(), 180, "the prompt", tmux.screen)
        tmux.type_line(f"{FIRST} /steps 16")
        # the colour codes stand around "steps": the count alone
        wait_until(lambda: re.search(r"\b[1-9]\d*/16\b", stream.read_text(errors="replace")), 120, "the bar",
                   tmux.screen)
        tmux.send("-l", "qzxq")  # typed while it runs
        wait_until(lambda: RESULT_LINE.search(tmux.screen()), 240, "the saved path", tmux.screen)
        wait_until(lambda: "qzxq" in tmux.screen().rpartition("flux2>")[2], 30, "the keys at the next prompt",
                   tmux.screen)
        tmux.send("C-u")
        tmux.type_line("quit")
        wait_until(lambda: "FLUX2_EXIT=0" in tmux.screen(), 60, "the exit", tmux.screen)
    finally:
        tmux.kill()
    written = stream.read_text(errors="replace")
    during = written.partition(".png  seed ")[0]
    assert "decoding…" in during and "16/16" in during, during[-2000:]
    assert "qzxq" not in during, during[-2000:]  # no echo over the bar
