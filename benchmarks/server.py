"""4. Server: `/status` latency while a generation runs, `/generate` throughput vs in-process.

Starts `flux2 serve --model tiny` as a subprocess on a free loopback port (the routes are
the spec's: POST /generate with {prompt, orientation, size, steps, seed}, GET /status)
and skips with a message when this installation has no `flux2 serve` yet.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import flux2_executable, median, percentile, summary, timed

STATUS_P99_TARGET_MS = 20.0
THROUGHPUT_TARGET = 0.95
STEPS = 4
LONG_STEPS = 50
POLL_INTERVAL_S = 0.01  # 100 polls a second: far more than a UI needs, without spinning a core


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Client:
    """One keep-alive HTTP connection (latency measures the server, not TCP set-up)."""

    def __init__(self, port: int, timeout: float = 600):
        self.port, self.timeout = port, timeout
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        try:
            self.connection.request(method, path, body=data, headers=headers)
            response = self.connection.getresponse()
        except (ConnectionError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.connection.request(method, path, body=data, headers=headers)
            response = self.connection.getresponse()
        payload = response.read()
        try:
            return response.status, json.loads(payload)
        except ValueError:
            return response.status, payload.decode(errors="replace")


def _start_server(flux2: str, port: int, output_dir: Path, log: Path) -> subprocess.Popen:
    handle = log.open("w")
    process = subprocess.Popen([flux2, "serve", "--model", "tiny", "--port", str(port), "--output-dir",
                                str(output_dir)], stdout=handle, stderr=subprocess.STDOUT)
    client = _Client(port, timeout=5)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flux2 serve exited with {process.returncode}: {log.read_text()[-500:]}")
        try:
            if client.request("GET", "/status")[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.25)
    process.terminate()
    raise RuntimeError("flux2 serve did not answer /status within 300 s")


def _stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _status_latencies(client: _Client, port: int, quick: bool) -> dict[str, Any]:
    idle = []
    for _ in range(50 if quick else 200):
        elapsed, (code, _) = timed(lambda: client.request("GET", "/status"))
        assert code == 200
        idle.append(elapsed * 1000)

    busy: list[float] = []
    for round_ in range(1 if quick else 3):
        done = threading.Event()
        answer: dict[str, Any] = {}

        def generate() -> None:
            try:
                answer["code"], answer["body"] = _Client(port).request("POST", "/generate", {
                    "prompt": f"a yellow triangle on a black background, long {round_}",
                    "orientation": "landscape", "size": "4mp", "steps": LONG_STEPS, "seed": round_})
            except Exception as error:  # reported below; the polling loop must end either way
                answer["code"], answer["body"] = None, repr(error)
            finally:
                done.set()

        thread = threading.Thread(target=generate)
        thread.start()
        while not done.is_set():
            elapsed, (code, body) = timed(lambda: client.request("GET", "/status"))
            if code == 200 and isinstance(body, dict) and body.get("generating"):
                busy.append(elapsed * 1000)  # only samples taken while the worker was generating
            time.sleep(POLL_INTERVAL_S)
        thread.join()
        if answer.get("code") != 200:
            raise RuntimeError(f"POST /generate answered {answer.get('code')}: {str(answer.get('body'))[:300]}")
    return {"idle_ms": {"p50": round(percentile(idle, 50), 3), "p99": round(percentile(idle, 99), 3), "n": len(idle)},
            "busy_ms": {"p50": round(percentile(busy, 50), 3), "p99": round(percentile(busy, 99), 3),
                        "max": round(max(busy), 3), "n": len(busy)}}


def _throughput(port: int, engine: Any, output_dir: Path, quick: bool) -> dict[str, Any]:
    from flux2cli.pipeline.request import GenerationRequest

    client = _Client(port)
    server_s, local_s = [], []
    rounds = 6 if quick else 20
    for i in range(-1, rounds):  # one warm-up round
        body = {"prompt": f"a blue circle on an orange background, throughput {i}",
                "orientation": "square", "size": "1mp", "steps": STEPS, "seed": 500 + i}
        request = GenerationRequest.create(body["prompt"], model=engine.spec, orientation="square", size="1mp",
                                           steps=STEPS, seed=500 + i)

        def remote() -> None:
            code, answer = client.request("POST", "/generate", body)
            if code != 200:
                raise RuntimeError(f"POST /generate answered {code}: {str(answer)[:300]}")

        def local() -> None:
            engine.generate_and_save(request, output_dir)

        pair = [("server", remote), ("local", local)]
        for name, fn in (pair if i % 2 == 0 else pair[::-1]):
            elapsed, _ = timed(fn)
            if i >= 0:
                (server_s if name == "server" else local_s).append(elapsed)
    ratio = median(local_s) / median(server_s)  # images/s over HTTP divided by images/s in-process
    return {"server_s": summary(server_s), "in_process_s": summary(local_s), "throughput_ratio": round(ratio, 4)}


def run(quick: bool = False, engine: Any = None) -> dict[str, Any]:
    flux2 = flux2_executable()
    from flux2cli.pipeline.engine import Engine

    engine = engine or Engine.load("tiny")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="flux2-bench-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "server").mkdir()
        (tmp_path / "local").mkdir()
        process = _start_server(flux2, port, tmp_path / "server", tmp_path / "server.log")
        try:
            status = _status_latencies(_Client(port), port, quick)
            throughput = _throughput(port, engine, tmp_path / "local", quick)
        finally:
            _stop_server(process)
    p99 = status["busy_ms"]["p99"]
    ratio = throughput["throughput_ratio"]
    return {
        "name": "server", "server_pid_was": process.pid, "status": status, "throughput": throughput,
        "rows": [
            ("server: GET /status while generating", f"p50 {status['busy_ms']['p50']:.2f} ms, p99 {p99:.2f} ms "
             f"(n={status['busy_ms']['n']}; idle p99 {status['idle_ms']['p99']:.2f} ms)",
             f"p99 < {STATUS_P99_TARGET_MS:g} ms", p99 < STATUS_P99_TARGET_MS),
            ("server: POST /generate throughput (64x64, 4 steps)",
             f"{ratio:.3f}x in-process generate_and_save", f">= {THROUGHPUT_TARGET}", ratio >= THROUGHPUT_TARGET),
        ],
    }


if __name__ == "__main__":  # python -m benchmarks.server
    print(json.dumps(run(quick=bool(os.environ.get("QUICK"))), indent=2, default=str))
