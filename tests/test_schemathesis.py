"""Schemathesis against a live server: every operation of /openapi.json, with every check.

Schemathesis generates bodies that the served schema allows (and, in its negative phases,
bodies it forbids) and checks that the server accepts the first and refuses the second,
never answers 5xx, and answers in the documented shapes. It runs as its own command, as a
user would run it, with a fixed seed and a bounded number of examples per operation.

The server runs the tiny model's registry entry (its ranges are what the document states)
over ``FakeEngine``: the schema allows 50 steps x 4 images at 320x192, tens of seconds of
CPU per example with the real model, and what is under test here is the HTTP contract.
The real engine answers the schema's edge values in tests/test_request_schema.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flux2cli.server.config import ServerConfig
from server_fixtures import FakeEngine, LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ST = Path(sys.executable).with_name("st")
TESTS = Path(__file__).resolve().parent


@pytest.mark.skipif(not ST.exists() and shutil.which("st") is None, reason="schemathesis is in the test extra")
def test_schemathesis_finds_nothing(tmp_path):
    # The widest queue: on a loaded machine the fuzzer's POST /jobs can outrun even an instant
    # engine, and a full queue's 503 (the spec's answer) counts as a server error to it.
    config = ServerConfig(output_dir=tmp_path / "out", queue_size=100)
    with LiveServer(FakeEngine(step_seconds=0.0), config) as live:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "NO_COLOR": "1",
               "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        # Every check runs but the two that tests/schemathesis.toml turns off, saying why.
        command = [str(ST if ST.exists() else shutil.which("st")), "--config-file", str(TESTS / "schemathesis.toml"),
                   "run", f"{live.url}/openapi.json", "--max-examples", "30", "--workers", "1",
                   "--generation-deterministic", "--request-timeout", "60", "--no-color",
                   "--report-dir", str(tmp_path / "report")]
        run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=800)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert summary and summary[1] == summary[2] and int(summary[1]) > 500, output[-3000:]
    selected, tested = re.search(r"Selected: (\d+)/", output), re.search(r"Tested: (\d+)", output)
    assert selected and tested and selected[1] == tested[1], output[-3000:]  # every operation was exercised
