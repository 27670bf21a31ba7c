"""The real `flux2 serve` console command, in a subprocess, with the tiny model."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from serve_process import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEY = "cli-test-key"
PROMPT = "a red circle on a blue background"


def test_flux2_serve_command_serves_the_api_and_stops_cleanly_on_sigterm(tmp_path):
    server = ServeProcess(["--model", "tiny", "--port", "0", "--output-dir", str(tmp_path), "--queue-size", "2"],
                          env={"FLUX2_API_KEY": KEY})
    try:
        server.wait_ready()
        assert server.url.startswith("http://127.0.0.1:")
        key = {"X-API-Key": KEY}
        assert server.call("GET", "/")[0] == 200
        assert server.call("GET", "/model-info")[0] == 401  # FLUX2_API_KEY is honoured
        status, body = server.call("GET", "/model-info", headers=key)
        assert status == 200 and json.loads(body)["model"] == "flux2-tiny"

        status, body = server.call("POST", "/generate", {"prompt": PROMPT, "steps": 2, "seed": 9}, headers=key)
        assert status == 200, body
        result = json.loads(body)
        assert result["images"][0]["seed"] == 9
        filename = result["images"][0]["filename"]
        assert (tmp_path / filename).is_file()
        assert server.call("GET", f"/images/{filename}", headers=key)[0] == 200

        replies = []
        long = threading.Thread(target=lambda: replies.append(
            server.call("POST", "/generate", {"prompt": PROMPT, "steps": 50}, headers=key)))
        long.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = json.loads(server.call("GET", "/status", headers=key)[1])
            if state["generating"] and state["step"] >= 1:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the long generation never started")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        stopped_in = time.monotonic() - started
        long.join(30)
        status, body = replies[0]
        assert status == 503 and "shutting down" in json.loads(body)["error"]
        assert stopped_in < 30
        assert "stopped" in "".join(server.stderr)
    finally:
        server.stop()


def test_flux2_serve_warns_when_exposed_without_a_key_and_exits_0_on_sigint(tmp_path):
    server = ServeProcess(["--model", "tiny", "--host", "0.0.0.0", "--port", "0", "--output-dir", str(tmp_path)])
    try:
        server.wait_ready()
        errors = "".join(server.stderr)
        assert "warning:" in errors and "without an API key" in errors
        # Not bound to loopback: the DNS-rebinding Host check does not apply, any name is fine.
        status, body = server.call("GET", "/status", headers={"Host": "my-gpu-box.lan"})
        assert status == 200 and json.loads(body)["generating"] is False
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(60) == 0
    finally:
        server.stop()


def test_flux2_serve_reports_a_port_in_use(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServeProcess(["--model", "tiny", "--port", str(port), "--output-dir", str(tmp_path)])
        try:
            assert server.proc.wait(60) == 1  # before loading the model
            errors = "".join(server.stderr)
            assert f"cannot listen on 127.0.0.1:{port}" in errors and "Traceback" not in errors
        finally:
            server.stop()
