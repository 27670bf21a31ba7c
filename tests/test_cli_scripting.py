"""What a script sees of `flux2 generate`: errors as JSON with --json, and Ctrl-C as one line and 130."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from console_script import FLUX2, PLAIN, run


@pytest.mark.parametrize("args,code,message", [
    (["--steps", "0"], 2, "steps must be between 1 and 50 for flux2-tiny (got 0)"),  # our validation
    (["--steps", "many"], 2, "Invalid value for '--steps'"),  # Typer's own parsing, before the command runs
    (["--model", "klein-4b"], 1, "black-forest-labs/FLUX.2-klein-4B is not in the local Hugging Face cache"),
])
def test_generate_json_reports_errors_as_json_on_stdout_with_the_same_exit_code(args, code, message, tmp_path):
    command = ["generate", "a cat", "--json", "--output-dir", str(tmp_path)]
    if "--model" not in args:
        command += ["--model", "tiny"]
    result = run(*command, *args, env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")})
    assert result.returncode == code, result.stderr
    body = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert body["success"] is False and body["exit_code"] == code and message in body["error"]
    assert "\n" not in body["error"]
    assert message in result.stderr and "Traceback" not in result.stderr  # stderr keeps its line
    assert not list(tmp_path.glob("*.png"))


def test_generate_without_json_prints_no_json_on_failure(tmp_path):
    result = run("generate", "a cat", "--model", "tiny", "--steps", "0", "--output-dir", str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""


@pytest.mark.slow
def test_ctrl_c_during_generate_says_where_it_stopped_and_exits_130(tmp_path):
    """A real SIGINT once the bar has counted a step (stderr is a terminal, so the bar draws):
    one line, status 130, and no image or sidecar."""
    steps = 50
    main, side = pty.openpty()
    process = subprocess.Popen(
        [FLUX2, "generate", "a red circle on a white background /2k", "--model", "tiny", "--steps", str(steps),
         "--output-dir", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=side, text=True,
        env={**os.environ, **PLAIN, "FLUX2_PREVIEW": "0"})
    os.close(side)
    seen = b""
    try:
        deadline = time.monotonic() + 180
        while not re.search(rb"\b([1-9]\d*)/%d steps" % steps, seen):
            assert time.monotonic() < deadline and process.poll() is None, seen.decode(errors="replace")[-2000:]
            if select.select([main], [], [], 0.5)[0]:
                seen += os.read(main, 65536)
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=120)
        while select.select([main], [], [], 0.2)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))  # the bar's cursor moves
    assert process.returncode == 130, text[-2000:]
    assert stdout == ""
    last = text.strip().splitlines()[-1].strip()
    match = re.fullmatch(r"cancelled at step (\d+)/50; nothing saved", last)
    assert match and 1 <= int(match.group(1)) < steps, text[-2000:]
    assert "Traceback" not in text and "Aborted" not in text
    assert not list(tmp_path.iterdir())
