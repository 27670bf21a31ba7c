"""Soak: `flux2 serve --model tiny` under 50 busy clients and 1 000 idle connections for 60 s.

    python -m benchmarks.soak [--seconds 60] [--clients 50] [--idle 1000] [--out FILE.json]

Not part of `make bench` and run by no test (it keeps two cores busy for over a minute).
Everything stays on 127.0.0.1. The clients mix, per request: GET /status (40 %, timed),
POST /jobs (20 %), GET /jobs/{id} (15 %), GET /images/{name} of an image made earlier
(15 %) and POST /generate (10 %), each with one step. Meanwhile 1 000 connections are
opened and left idle; whenever the server closes one (its header timeout, or to make
room), it is opened again, so the pressure holds for the whole run.

Reported: requests and answers by route and status, transport errors, /status latency
(median, p99, max), the server's RSS and open descriptors before and after, and the
output folder checked against every image the server named: lost (named, missing),
partial (a PNG without its sidecar, or a temp file left), stray (on disk, never named).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import flux2_executable, percentile

STATUS_P99_TARGET_MS = 100.0
MIX = (("status", 40), ("job", 20), ("job_state", 15), ("image", 15), ("generate", 10))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc(pid: int) -> dict[str, int]:
    """RSS (kB) and open descriptors of the server process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {"rss_kb": rss, "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


def _raise_own_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Soak:
    def __init__(self, port: int, seconds: float, clients: int, idle: int):
        self.port, self.seconds, self.clients, self.idle = port, seconds, clients, idle
        self.base = f"http://127.0.0.1:{port}"
        self.answers: dict[str, Counter] = defaultdict(Counter)
        self.transport_errors: Counter = Counter()
        self.status_ms: list[float] = []
        self.named: set[str] = set()  # every image a 200 answer named
        self.job_ids: list[str] = []
        self.idle_reopened = 0

    async def run(self) -> None:
        import aiohttp

        deadline = time.monotonic() + self.seconds
        idle = asyncio.create_task(self._hold_idle(deadline))
        connector = aiohttp.TCPConnector(limit=self.clients, force_close=False)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, deadline, seed) for seed in range(self.clients)))
        await idle

    async def _hold_idle(self, deadline: float) -> None:
        streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = [None] * self.idle

        async def reopen(index: int) -> None:
            try:
                streams[index] = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                streams[index] = None

        await asyncio.gather(*(reopen(i) for i in range(self.idle)))
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            for index, stream in enumerate(streams):
                if stream is None or stream[0].at_eof() or stream[1].is_closing():
                    if stream is not None:
                        stream[1].close()
                    self.idle_reopened += 1
                    await reopen(index)
        for stream in streams:
            if stream is not None:
                stream[1].close()

    async def _client(self, session: Any, deadline: float, seed: int) -> None:
        rng = random.Random(seed)
        routes, weights = zip(*MIX)
        while time.monotonic() < deadline:
            route = rng.choices(routes, weights)[0]
            try:
                await getattr(self, f"_{route}")(session, rng)
            except (OSError, asyncio.TimeoutError) as error:
                self.transport_errors[f"{route}: {type(error).__name__}"] += 1
            except Exception as error:  # aiohttp's ClientError family and the like
                self.transport_errors[f"{route}: {type(error).__name__}"] += 1

    async def _call(self, session: Any, route: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with session.request(method, self.base + path, json=body) as response:
            data = await response.read()
        self.answers[route][response.status] += 1
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(data)
        return response.status, data

    async def _status(self, session: Any, rng: random.Random) -> None:
        start = time.perf_counter()
        status, _ = await self._call(session, "GET /status", "GET", "/status")
        if status == 200:
            self.status_ms.append((time.perf_counter() - start) * 1000)

    async def _generate(self, session: Any, rng: random.Random) -> None:
        status, body = await self._call(session, "POST /generate", "POST", "/generate",
                                        {"prompt": "a red circle", "steps": 1, "seed": rng.randrange(2**32)})
        if status == 200:
            self.named.update(image["filename"] for image in body["images"])

    async def _job(self, session: Any, rng: random.Random) -> None:
        status, body = await self._call(session, "POST /jobs", "POST", "/jobs",
                                        {"prompt": "a blue square", "steps": 1, "seed": rng.randrange(2**32)})
        if status == 202:
            self.job_ids.append(body["id"])

    async def _job_state(self, session: Any, rng: random.Random) -> None:
        if not self.job_ids:
            return await self._status(session, rng)
        status, body = await self._call(session, "GET /jobs/{id}", "GET", f"/jobs/{rng.choice(self.job_ids)}")
        if status == 200 and body.get("result"):
            self.named.update(image["filename"] for image in body["result"]["images"])

    async def _image(self, session: Any, rng: random.Random) -> None:
        if not self.named:
            return await self._status(session, rng)
        name = rng.choice(sorted(self.named))
        await self._call(session, "GET /images/{name}", "GET", f"/images/{name}")

    async def collect_finished_jobs(self) -> None:
        """After the run: the results of every job accepted, so that none goes uncounted."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            for job_id in self.job_ids:
                for _ in range(600):
                    async with session.get(f"{self.base}/jobs/{job_id}") as response:
                        if response.status != 200:
                            break
                        body = await response.json()
                    if body["state"] in ("done", "error", "cancelled"):
                        if body.get("result"):
                            self.named.update(image["filename"] for image in body["result"]["images"])
                        break
                    await asyncio.sleep(0.1)


def _check_folder(folder: Path, named: set[str]) -> dict[str, Any]:
    present = {path.name for path in folder.iterdir()}
    pngs = {name for name in present if name.endswith(".png")}
    return {
        "images_named": len(named),
        "lost": sorted(named - pngs),
        "partial": sorted(name for name in pngs if name.removesuffix(".png") + ".prompt" not in present)
        + sorted(name for name in present if name.startswith(".flux2-")),
        "stray": sorted(pngs - named),
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    _raise_own_fd_limit(args.idle + args.clients + 256)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="flux2-soak-") as tmp:
        folder, log = Path(tmp) / "out", Path(tmp) / "serve.log"
        with log.open("w") as handle:
            server = subprocess.Popen([flux2_executable(), "serve", "--model", "tiny", "--port", str(port),
                                       "--output-dir", str(folder)], stdout=handle, stderr=subprocess.STDOUT)
        try:
            _wait_ready(port, server, log)
            soak = Soak(port, args.seconds, args.clients, args.idle)
            before = _proc(server.pid)
            started = time.monotonic()
            asyncio.run(soak.run())
            elapsed = time.monotonic() - started
            asyncio.run(soak.collect_finished_jobs())
            time.sleep(1.0)  # let the server close the last connections before counting descriptors
            after = _proc(server.pid)
        finally:
            server.terminate()
            server.wait(120)
        files = _check_folder(folder, soak.named)
        log_text = log.read_text(errors="replace")

    answered = sum(sum(counter.values()) for counter in soak.answers.values())
    report = {
        "seconds": round(elapsed, 1), "clients": args.clients, "idle_connections": args.idle,
        "requests": answered + sum(soak.transport_errors.values()),
        "answers": {route: dict(sorted(counter.items())) for route, counter in sorted(soak.answers.items())},
        "server_errors_5xx_other_than_503": sum(n for counter in soak.answers.values()
                                                for status, n in counter.items() if status >= 500 and status != 503),
        "transport_errors": dict(soak.transport_errors),
        "idle_reopened": soak.idle_reopened,
        "status_ms": {"n": len(soak.status_ms), "median": round(percentile(soak.status_ms, 50), 2),
                      "p99": round(percentile(soak.status_ms, 99), 2), "max": round(max(soak.status_ms), 2)},
        "status_p99_target_ms": STATUS_P99_TARGET_MS,
        "server_before": before, "server_after": after,
        "rss_growth_mb": round((after["rss_kb"] - before["rss_kb"]) / 1024, 1),
        "fd_growth": after["fds"] - before["fds"],
        "files": {key: (value if isinstance(value, int) else len(value)) for key, value in files.items()},
        "lost_or_partial": files["lost"][:5] + files["partial"][:5],
        "server_log_tracebacks": log_text.count("Traceback"),
        "server_log_lines": len(log_text.splitlines()),
        "server_exit_status": server.returncode,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


def _wait_ready(port: int, server: subprocess.Popen, log: Path) -> None:
    import http.client

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"flux2 serve exited with {server.returncode}: {log.read_text()[-500:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/status")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("flux2 serve did not answer /status within 300 s")


if __name__ == "__main__":
    main()
