"""Connections: clients that send nothing, drip their headers or body, or open more connections
than the server has descriptors for. Each is closed or answered cleanly, the log gets a line
a minute at most, and generating (which needs descriptors to save) keeps working.

The record: slowloris, and the ~1 100 idle connections of issue 18 that exhausted the
1 024-descriptor limit, failed a running job's save with EMFILE and wrote a traceback
per accept.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest

from flux2cli.server.config import ServerConfig
from flux2cli.server.connections import GUARD, MIN_IDLE_TO_EVICT
from guarded_server import GuardedServer, raw_request
from server_fixtures import TINY_PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CAP = 16


@pytest.fixture(scope="module")
def impatient(tiny_engine, tmp_path_factory):
    """Header and body timeouts of one second, so waiting them out is quick."""
    config = ServerConfig(output_dir=tmp_path_factory.mktemp("impatient-out"), header_timeout=1.0, body_timeout=1.0)
    with GuardedServer(tiny_engine, config) as live:
        yield live


@pytest.fixture(scope="module")
def crowded(tiny_engine, tmp_path_factory):
    """Room for 16 connections, and idle ones kept long enough to fill it."""
    config = ServerConfig(output_dir=tmp_path_factory.mktemp("crowded-out"), max_connections=CAP,
                          header_timeout=120.0)
    with GuardedServer(tiny_engine, config) as live:
        yield live


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, words: str) -> list[str]:
        return [self.format(record) for record in self.records if words in record.getMessage()]


@pytest.fixture
def server_log():
    handler = Records()
    logger = logging.getLogger("flux2cli.server")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _closed_by_server(sock: socket.socket, limit: float = 30) -> bytes:
    """Everything the server sent until it closed the connection (b"" when nothing)."""
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


@pytest.mark.parametrize("sent", [b"", b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
def test_a_client_that_sends_nothing_or_half_its_headers_is_closed(impatient, sent):
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.sendall(sent)
        assert _closed_by_server(sock) == b""  # closed without a response; not held for an hour


def test_headers_dripped_a_byte_at_a_time_do_not_keep_the_connection(impatient):
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        for _ in range(200):  # 20 s of dripping if the server never closes
            try:
                sock.sendall(b"X-Drip: a\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        if not closed:
            sock.settimeout(0.5)
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                pass
        assert closed


@pytest.mark.parametrize(("path", "content_type"), [
    ("/generate", b"application/json"),
    ("/v1/images/generations", b"application/json"),
    ("/v1/images/edits", b"multipart/form-data; boundary=b"),
])
def test_a_body_that_stops_arriving_gets_408(impatient, path, content_type):
    head = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\nContent-Length: 1000"
            % (path.encode(), impatient.port, content_type))
    reply = raw_request(impatient.port, head, b'{"prompt": "a' if b"json" in content_type else b"--b\r\n")
    assert reply.status == 408, (reply.status, reply.body[:200])
    assert "did not arrive within 1 seconds" in reply.text and "Traceback" not in reply.text
    impatient.assert_survived()


def _closed(sockets: list[socket.socket]) -> list[socket.socket]:
    """The sockets the server has closed (readable, and nothing to read)."""
    readable, _, _ = select.select(sockets, [], [], 1.0)
    return [sock for sock in readable if _closed_by_server(sock, limit=1) == b""]


@contextmanager
def _idle_connections(port: int, count: int):
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_past_the_cap_new_connections_get_503_until_an_idle_one_can_be_closed(crowded, server_log):
    guard = crowded.app[GUARD]
    assert guard.limit == CAP
    with _idle_connections(crowded.port, CAP) as idle:
        crowded.wait_until(lambda: guard.open_connections() == CAP, what="the idle connections to be open")
        for _ in range(5):  # every connection is new: none is quiet long enough to give way
            reply = raw_request(crowded.port, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1")
            assert reply.status == 503 and reply.headers["Retry-After"] == "5"
            assert "too many open connections" in reply.json()["error"]
        time.sleep(MIN_IDLE_TO_EVICT + 0.5)
        for _ in range(5):  # the first takes the place of the longest-idle connection, and then leaves it free
            reply = raw_request(crowded.port, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1")
            assert reply.status == 200, (reply.status, reply.body[:200])
        assert _closed(idle) == idle[:1]
    assert (guard.refused, guard.evicted) == (5, 1)
    assert len(server_log.lines("connection limit")) == 1  # one line for all of it, not one per accept


def test_a_connection_with_a_request_in_progress_is_never_closed_for_a_new_one(crowded):
    guard = crowded.app[GUARD]
    crowded.wait_until(lambda: guard.open_connections() == 0, what="earlier connections to close")
    with _idle_connections(crowded.port, CAP - 1) as busy:
        for sock in busy:  # each starts a request whose body is still to come
            sock.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
        crowded.wait_until(lambda: sum(1 for count in guard._busy.values() if count) == CAP - 1,
                           what="the requests to start")
        with _idle_connections(crowded.port, 1) as idle:
            crowded.wait_until(lambda: guard.open_connections() == CAP, what="the cap to be reached")
            time.sleep(MIN_IDLE_TO_EVICT + 0.5)  # every connection, busy or idle, is now old enough
            reply = raw_request(crowded.port, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1")
            assert reply.status == 200
            assert _closed(idle) == idle  # the idle one gave way
        assert _closed(busy) == []  # and no busy one


def test_a_parser_refusal_is_one_escaped_line_without_a_traceback(impatient, server_log):
    for _ in range(3):
        reply = raw_request(impatient.port, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                            b"Forged\x1b[31m\r\nline\x1b]0;pwned\x07")
        assert reply.status == 400 and b"Traceback" not in reply.body
    lines = server_log.lines("malformed request")
    assert len(lines) == 1, lines  # the next ones within the minute are counted, not written
    record = next(r for r in server_log.records if "malformed request" in r.getMessage())
    assert record.exc_info is None or record.exc_text is None or "Traceback" not in (record.exc_text or "")
    assert "\x1b" not in lines[0] and "\x07" not in lines[0] and "\n" not in lines[0]
    impatient.assert_survived()


def test_the_server_log_escapes_what_clients_control():
    from flux2cli.server.logs import EscapingFilter

    handler = Records()
    logger = logging.getLogger("flux2cli.server.test-escaping")
    logger.addFilter(EscapingFilter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("answering %s", "/static/\x1b[2J\r\n12:00:00 forged line\u202e\x00" + "a" * 5000)
        try:
            raise ValueError("bad \x1b[31m value\nforged")
        except ValueError:
            logger.exception("failed on %s", "x\ny")
    finally:
        logger.removeHandler(handler)
    first, second = (handler.format(record) for record in handler.records)
    assert "\x1b" not in first and "\n" not in first and "\r" not in first and "\u202e" not in first
    assert "\\x1b[2J" in first and len(first) < 1100
    message, _, traceback = second.partition("\n")
    assert message == "failed on x\\x0ay" and "\x1b" not in traceback and "value\\x0aforged" in traceback


# -- descriptors: idle clients never starve the save -----------------------------------


def _serve(tmp_path, limit: int) -> subprocess.Popen:
    from console_script import FLUX2, PLAIN

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # hard too: the server cannot raise it

    return subprocess.Popen([FLUX2, "serve", "--model", "tiny", "--port", "0", "-o", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=lower_limit,
                            env={**os.environ, **PLAIN})


def test_a_thousand_idle_connections_do_not_stop_a_generation_from_saving(tmp_path):
    """The issue's case: 1 100 idle connections against a 1 024-descriptor limit."""
    import http.client

    process = _serve(tmp_path, 1024)
    try:
        line = process.stdout.readline()
        assert " on http://" in line, (line, process.stderr.read() if process.poll() is not None else "")
        port = int(line.split(" on http://", 1)[1].split()[0].rsplit(":", 1)[1])
        with _idle_connections(port, 1100):
            time.sleep(MIN_IDLE_TO_EVICT + 0.5)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            connection.request("POST", "/generate", json.dumps({"prompt": TINY_PROMPT, "steps": 1, "batch": 2}),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, body[:300]
            saved = [image["filename"] for image in json.loads(body)["images"]]
            connection.close()
            assert all((tmp_path / "out" / name).is_file() for name in saved)
            assert all((tmp_path / "out" / name).with_suffix(".prompt").is_file() for name in saved)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and "EMFILE" not in stderr and "Too many open files" not in stderr
    assert stderr.count("connection limit") == 1, stderr[-2000:]
