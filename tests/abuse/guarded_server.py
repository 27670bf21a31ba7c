"""A live server that every abuse test must leave healthy, and raw HTTP to poke at it.

``GuardedServer`` is ``LiveServer`` plus an invariant checked after every test of this
folder (conftest.py) and after each abusive request that calls ``refused``: ``/status``
still answers 200, and the output folder holds only whole results (each PNG this server
wrote with its sidecar, and files a test planted on purpose), never a temp file or a stray.
"""

from __future__ import annotations

import socket
from email.parser import BytesParser

from flux2cli.pipeline.output import TEMP_PREFIX
from server_fixtures import LiveServer, Reply, assert_error

OPEN: list[GuardedServer] = []


class GuardedServer(LiveServer):
    def __init__(self, engine, config):
        super().__init__(engine, config)
        self.planted: set[str] = set()  # names a test put into the output folder itself

    def __enter__(self) -> GuardedServer:
        super().__enter__()
        OPEN.append(self)
        return self

    def __exit__(self, *exc) -> None:
        OPEN.remove(self)
        super().__exit__(*exc)

    def plant(self, name: str, data: bytes) -> None:
        (self.config.output_dir / name).write_bytes(data)
        self.planted.add(name)

    def written(self) -> set[str]:
        return self.on_loop(lambda: set(self.worker.written))

    def assert_survived(self) -> None:
        key = self.config.api_key
        reply = self.call("GET", "/status", headers={"X-API-Key": key} if key else None, timeout=30)
        assert reply.status == 200, (reply.status, reply.body[:200])
        assert isinstance(reply.json()["generating"], bool)
        # A generation still saving has temp files by design; a hung one fails here.
        self.wait_until(lambda: not self.worker.busy, timeout=60, what="the worker to go idle")
        self.assert_output_whole()

    def assert_output_whole(self) -> None:
        folder = self.config.output_dir
        present = {path.name for path in folder.iterdir()}
        leftovers = sorted(name for name in present if name.startswith(TEMP_PREFIX))
        assert not leftovers, f"half-written files in the output folder: {leftovers}"
        pngs = self.written()
        whole = pngs | {name.removesuffix(".png") + ".prompt" for name in pngs}
        assert whole <= present, f"results missing from the folder: {sorted(whole - present)}"
        strays = present - whole - self.planted
        assert not strays, f"files nobody asked for in the output folder: {sorted(strays)}"


def refused(server: GuardedServer, reply: Reply, status: int) -> str:
    """The spec's error body with ``status`` (nothing leaked), and the server survived it."""
    message = assert_error(reply, status)
    server.assert_survived()
    return message


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> Reply:
    """Send bytes exactly as given (no client normalises the path) and read the whole answer.

    ``head`` is the request line and headers without the blank line; Connection: close is
    added so the answer ends with the connection.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        # Stop once the answer is complete: a server may linger, reading a body that never ends.
        while not _complete(answer) and (chunk := sock.recv(65536)):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    headers = BytesParser().parsebytes(header_block + b"\r\n\r\n", headersonly=True)
    if "chunked" in headers.get("Transfer-Encoding", ""):
        payload = _unchunk(payload)
    return Reply(int(status_line.split()[1]), headers, payload)


def _complete(answer: bytes) -> bool:
    head, found, payload = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    headers = BytesParser().parsebytes(head.partition(b"\r\n")[2] + b"\r\n\r\n", headersonly=True)
    if "chunked" in headers.get("Transfer-Encoding", ""):
        return payload.endswith(b"0\r\n\r\n")
    length = headers.get("Content-Length")
    return length is not None and len(payload) >= int(length)


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


def get_raw(server: GuardedServer, target: bytes, headers: bytes = b"") -> Reply:
    """GET with the request target sent byte for byte."""
    head = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port + headers
    return raw_request(server.port, head)


def chunked(body: bytes, size: int) -> bytes:
    """``body`` in Transfer-Encoding: chunked framing, ``size`` bytes a chunk."""
    frames = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(frames) + b"0\r\n\r\n"
