"""What `flux2 serve` logs, read off the real command's stderr: counts in words, and a shutdown
that claims to cancel a generation only when one runs."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from serve_process import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PROMPT = "a red circle on a blue background"


def test_counts_and_an_idle_shutdown(tmp_path):
    server = ServeProcess(["--model", "tiny", "--port", "0", "--output-dir", str(tmp_path)])
    try:
        server.wait_ready()
        for batch in (1, 2):
            status, body = server.call("POST", "/generate", {"prompt": PROMPT, "steps": 1, "batch": batch})
            assert status == 200, body
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
    log = "".join(server.stderr)
    assert ": 1 image in " in log and ": 2 images in " in log and "image(s)" not in log
    assert "stopping: no new requests\n" in log and "cancelling" not in log, log


def test_a_shutdown_during_a_generation_says_it_cancels_it(tmp_path):
    server = ServeProcess(["--model", "tiny", "--port", "0", "--output-dir", str(tmp_path)])
    try:
        server.wait_ready()
        long = threading.Thread(target=lambda: server.call("POST", "/generate", {"prompt": PROMPT, "steps": 50}))
        long.start()
        deadline = time.monotonic() + 60
        while json.loads(server.call("GET", "/status")[1]).get("step", 0) < 1:
            assert time.monotonic() < deadline, "the generation never started"
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        long.join(30)
    finally:
        server.stop()
    assert "stopping: no new requests; cancelling the running generation" in "".join(server.stderr)
