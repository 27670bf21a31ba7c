"""Request bodies: over the cap, chunked in tiny pieces, compressed bombs, many form parts,
and JSON built to hurt the parser. Each gets one JSON answer and the server goes on."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from flux2cli.server.config import ServerConfig
from guarded_server import GuardedServer, chunked, raw_request, refused
from server_fixtures import assert_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CAP = 64 * 1024  # a small cap keeps the payloads small; the default is 32 MB


@pytest.fixture(scope="module")
def capped(tiny_engine, tmp_path_factory):
    config = ServerConfig(output_dir=tmp_path_factory.mktemp("capped-out"), max_body_bytes=CAP)
    with GuardedServer(tiny_engine, config) as live:
        yield live


def _post(server, path: str, body: bytes, headers: bytes = b"", content_type: bytes = b"application/json"):
    """POST over a raw socket, so the framing (Content-Length or chunked) is exactly ours."""
    head = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\n" % (path.encode(), server.port,
                                                                                 content_type) + headers)
    if b"Transfer-Encoding" not in headers:
        head += b"Content-Length: %d\r\n" % len(body)
    return raw_request(server.port, head, body)


def test_a_declared_length_over_the_cap_is_refused_before_reading(capped):
    body = json.dumps({"prompt": "x", "input_image": "A" * (CAP + 10)}).encode()
    for path in ("/generate", "/jobs"):
        reply = capped.call("POST", path, raw=body, headers={"Content-Type": "application/json"})
        assert "too large; the limit is" in refused(capped, reply, 413)
    # The declaration alone is enough: the server does not wait for 2 GB to arrive.
    started = time.monotonic()
    reply = raw_request(capped.port, b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: 2147483648", b"{")
    refused(capped, reply, 413)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("piece", [1, 1024])
def test_a_chunked_body_over_the_cap_is_refused_while_reading(capped, piece):
    body = b'{"prompt": "x", "pad": "' + b"A" * (CAP + 10) + b'"}'
    reply = _post(capped, "/jobs", chunked(body, piece), headers=b"Transfer-Encoding: chunked\r\n")
    assert "too large" in refused(capped, reply, 413)


def test_thousands_of_tiny_chunks_reassemble_into_the_body(capped):
    body = json.dumps({"prompt": "a red circle" + " " * 4000, "steps": 0}).encode()
    reply = _post(capped, "/generate", chunked(body, 1), headers=b"Transfer-Encoding: chunked\r\n")
    assert "steps must be between" in refused(capped, reply, 400)  # read whole, then validated


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_gzip_bomb_is_capped_after_decompression(capped, framing):
    bomb = gzip.compress(b" " * (64 * 2**20), 9)  # 64 MB of spaces in ~64 KB
    assert len(bomb) < CAP  # small enough to pass the declared-length check
    headers = b"Content-Encoding: gzip\r\n"
    payload = bomb
    if framing == "chunked":
        headers += b"Transfer-Encoding: chunked\r\n"
        payload = chunked(bomb, 8192)
    refused(capped, _post(capped, "/generate", payload, headers), 413)


def _multipart(fields: int) -> tuple[bytes, bytes]:
    boundary = b"flux2abuse"
    parts = [b'--%s\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % (boundary, i) for i in range(fields)]
    return b"".join(parts) + b"--%s--\r\n" % boundary, b"multipart/form-data; boundary=" + boundary


def test_a_multipart_body_with_many_fields_is_refused_quickly(server):
    body, content_type = _multipart(20_000)
    started = time.monotonic()
    for path in ("/generate", "/jobs"):
        assert "application/json" in refused(server, _post(server, path, body, content_type=content_type), 415)
    assert time.monotonic() - started < 10


def test_openai_edits_refuse_a_form_with_many_fields(server):
    """The one route that reads multipart stops counting parts early."""
    body, content_type = _multipart(20_000)
    started = time.monotonic()
    reply = _post(server, "/v1/images/edits", body, content_type=content_type)
    assert reply.status == 400, (reply.status, reply.body[:200])
    assert b"Traceback" not in reply.body and "error" in reply.json()
    assert time.monotonic() - started < 20
    server.assert_survived()


@pytest.mark.parametrize("raw", [
    b"{", b"[1, 2]", b'"prompt"', b"\xff\xfe", b"null", b"",
    b'{"prompt": NaN}', b'{"prompt": "x", "steps": NaN}', b'{"prompt": "x", "seed": Infinity}',
    b'{"prompt": "x", "strength": -Infinity}',
    b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}",  # past Python's int-parsing limit
    b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # recursion
    b'\xef\xbb\xbf{"prompt": "x"}',  # a byte-order mark
    b'{"prompt": "x"} {"prompt": "y"}',
    b'{"prompt": "\\ud8"}',  # an escape cut short
])
def test_bodies_that_are_not_a_json_object_get_400(server, raw):
    for path in ("/generate", "/jobs"):
        reply = server.call("POST", path, raw=raw, headers={"Content-Type": "application/json"})
        assert reply.status == 400, (raw[:60], reply.status, reply.body[:200])
        assert "JSON" in assert_error(reply, 400)
        server.assert_survived()


# -- bounded work per body (issue 18: one 31 MB body held the event loop for seconds) --------


@pytest.mark.parametrize("path", ["/generate", "/jobs", "/v1/images/generations"])
def test_a_body_of_millions_of_values_is_refused_before_it_is_parsed(server, path):
    """Three million zeros in one field: counted in one pass, never built into a list."""
    raw = b'{"prompt": "x", "steps": [' + b"0," * 3_000_000 + b'0]}'
    reply = server.call("POST", path, raw=raw, headers={"Content-Type": "application/json"})
    assert reply.status == 400, (reply.status, reply.body[:200])
    body = reply.json()
    message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    assert "too many JSON values" in message and len(message) < 200
    server.assert_survived()


@pytest.mark.parametrize(("field", "value"), [
    ("orientation", "y" * 2_000_000),
    ("size", "y" * 2_000_000),
    ("steps", [7] * 30_000),
    ("seed", {str(i): i for i in range(10_000)}),
    ("prompt", ["y" * 1000] * 1000),
])
def test_an_error_quotes_a_few_characters_of_a_huge_value(server, field, value):
    reply = server.call("POST", "/generate", {"prompt": "x", field: value})
    message = refused(server, reply, 400)
    assert len(message) < 300 and message.count("y") < 60 and message.count("7") < 60, message[:300]


def test_an_error_message_of_any_length_leaves_as_one_clipped_line():
    from flux2cli.errors import InvalidRequest
    from flux2cli.server.responses import MAX_MESSAGE_CHARS, error_parts

    status, text, _ = error_parts(InvalidRequest("bad\n" + "x " * 5_000_000))
    assert status == 400 and len(text) <= MAX_MESSAGE_CHARS and "\n" not in text and text.endswith("…")
