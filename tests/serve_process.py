"""A `flux2 serve` console command in a subprocess: its address read off stdout, its output kept."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


def _flux2() -> list[str]:
    script = Path(sys.executable).with_name("flux2")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flux2cli"]


class ServeProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [*_flux2(), "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**{k: v for k, v in os.environ.items() if k != "FLUX2_API_KEY"},
                 "NO_COLOR": "1", "COLUMNS": "200", **(env or {})})
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._url = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, False), daemon=True).start()

    def _read(self, stream, lines: list[str], look_for_url: bool) -> None:
        for line in stream:
            lines.append(line)
            match = re.search(r"http://[^\s]+", line) if look_for_url else None
            if match and not self.url:
                self.url = match.group(0)
                self._url.set()

    def wait_ready(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while not self._url.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"flux2 serve did not start: {''.join(self.stderr)[-2000:]}")
        return self.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def call(self, method: str, path: str, body=None, headers=None, timeout: float = 120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
