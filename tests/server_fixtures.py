"""Shared pieces of the server tests: a live server on 127.0.0.1, an HTTP client, a fake engine.

The real engine comes from conftest.py's session-scoped ``tiny_engine`` fixture, so the
tiny model is loaded once for the whole test session.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from flux2cli.errors import GenerationCancelled
from flux2cli.pipeline.events import StepEvent
from flux2cli.pipeline.output import save_images
from flux2cli.pipeline.registry import get_model
from flux2cli.server.app import init_app, make_runner, start_site
from flux2cli.server.config import ServerConfig
from flux2cli.server.state import WORKER

TINY_PROMPT = "a red circle on a blue background"


class FakeEngine:
    """Records requests and steps with small sleeps; writes real PNGs through save_images.

    With ``hold=True`` every generation waits after its first step until ``release`` is
    set (or it is cancelled), so tests can look at a running job without racing it.
    """

    def __init__(self, *, step_seconds: float = 0.005, hold: bool = False, fail: Exception | None = None):
        self.spec = get_model("tiny")
        self.requests: list[Any] = []
        self.step_seconds = step_seconds
        self.hold = hold
        self.release = threading.Event()
        self.fail = fail

    def describe(self) -> dict[str, str]:
        return {"model": "fake", "encoder": "no encoder", "description": "fake with no encoder"}

    def generate_and_save(self, request, output_dir: Path, *, on_step=None, cancel=None):
        self.requests.append(request)
        for step in range(1, request.steps + 1):
            time.sleep(self.step_seconds)
            if on_step is not None:
                on_step(StepEvent(step, request.steps, request.batch))
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(step, request.steps)
            while self.hold and step == 1 and not self.release.is_set():
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled(step, request.steps)
                time.sleep(0.005)
        if self.fail is not None:
            raise self.fail
        from PIL import Image

        image = Image.new("RGB", (request.width, request.height), (200, 40, 40))
        results = [SimpleNamespace(image=image, seed=seed, timings={"encoding": 0.0, "diffusion": 0.01})
                   for seed in request.seeds]
        return save_images(results, request, output_dir=Path(output_dir), model_name="fake")


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class LiveServer:
    """The real app (init_app + make_runner) on 127.0.0.1:<free port>, in a background thread."""

    def __init__(self, engine, config: ServerConfig):
        self.engine = engine
        self.config = replace(config, port=0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self.runner = None
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        self.on_loop(self._start)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _start(self) -> None:
        self.runner = make_runner(init_app(self.engine, self.config))
        await self.runner.setup()
        self.url = await start_site(self.runner, self.config.host, 0)

    def stop(self) -> None:
        if self.runner is not None:
            self.on_loop(self.runner.cleanup, timeout=60)
            self.runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def on_loop(self, function: Callable[[], Any], timeout: float = 30) -> Any:
        """Run ``function`` (sync, or a coroutine function) on the server's loop; returns its result."""
        async def call():
            result = function()
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    @property
    def app(self):
        return self.runner.app

    @property
    def worker(self):
        return self.runner.app[WORKER]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connection(self, timeout: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             *, raw: bytes | None = None, timeout: float = 120) -> Reply:
        headers = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def events(self, job_id: str, headers: dict[str, str] | None = None, timeout: float = 120) -> Iterator[dict]:
        """Yield the job's SSE events as {"id", "event", "data"} until the stream ends."""
        conn = self.connection(timeout)
        try:
            conn.request("GET", f"/jobs/{job_id}/events", headers=headers or {})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            event: dict[str, Any] = {}
            while True:
                line = response.readline()
                if not line:
                    return
                line = line.decode().rstrip("\n")
                if not line:
                    if "data" in event:
                        yield event
                    event = {}
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(": ")
                    event[field] = json.loads(value) if field == "data" else (int(value) if field == "id" else value)
        finally:
            conn.close()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.on_loop(predicate):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")


def assert_error(reply: Reply, status: int) -> str:
    """The reply is the spec's error body with ``status``; returns the message."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert body["success"] is False and set(body) == {"success", "error"}
    message = body["error"]
    assert isinstance(message, str) and message
    assert "Traceback" not in message and "/work/" not in message and "/tmp/" not in message
    assert "File \"" not in message
    return message
