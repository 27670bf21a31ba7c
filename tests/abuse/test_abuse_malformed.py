"""Client input that used to surface as a 500: malformed part headers in the edit route's
multipart form, and a Host header whose port is out of range (it passed the Host check, the
image was generated and saved, and building its URL then failed, orphaning the file).
Each is a 400 now, and a refused request writes nothing."""

from __future__ import annotations

import os

import pytest

from guarded_server import raw_request
from images import png_bytes
from server_fixtures import TINY_PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BOUNDARY = b"flux2malformed"


def _form(*parts: bytes) -> bytes:
    return b"".join(b"--%s\r\n%s\r\n" % (BOUNDARY, part) for part in parts) + b"--%s--\r\n" % BOUNDARY


def _edit(server, body: bytes):
    head = (b"POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d" % (server.port, BOUNDARY, len(body)))
    return raw_request(server.port, head, body)


PROMPT_PART = b'Content-Disposition: form-data; name="prompt"\r\n\r\n' + TINY_PROMPT.encode()
IMAGE_PART = (b'Content-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
              + png_bytes((32, 32)))


@pytest.mark.parametrize("bad_part", [
    b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b'Content-Disposition: form-data; name="n"\r\n\r\n1',
    b"X-Long: " + b"a" * 20_000 + b'\r\nContent-Disposition: form-data; name="n"\r\n\r\n1',
    b'no colon here\r\nContent-Disposition: form-data; name="n"\r\n\r\n1',
    b'Content-Disposition: form-data; name="n"\r\n\x00\x1b[31m\r\n\r\n1',
    b' folded: line\r\nContent-Disposition: form-data; name="n"\r\n\r\n1',
], ids=["too many", "too long", "no colon", "control bytes", "leading space"])
def test_malformed_part_headers_are_a_400_in_openai_shape(server, bad_part):
    before = set(os.listdir(server.config.output_dir))
    reply = _edit(server, _form(PROMPT_PART, bad_part, IMAGE_PART))
    assert reply.status == 400, (reply.status, reply.body[:300])
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and "Traceback" not in error["message"]
    assert "\x1b" not in error["message"] and len(error["message"]) < 300
    server.assert_survived()
    assert set(os.listdir(server.config.output_dir)) == before


@pytest.mark.parametrize("host", ["127.0.0.1:99999", "localhost:65536", "[::1]:70000", "127.0.0.1:4294967297"])
def test_a_host_port_out_of_range_is_a_400_before_anything_is_generated(server, host):
    before = set(os.listdir(server.config.output_dir))
    written = server.written()
    for path, body in (("/v1/images/generations", {"prompt": TINY_PROMPT, "response_format": "url", "steps": 1}),
                       ("/generate", {"prompt": TINY_PROMPT, "steps": 1}),
                       ("/status", None)):
        reply = server.call("POST" if body else "GET", path, body, headers={"Host": host})
        assert reply.status == 400, (path, reply.status, reply.body[:300])
        assert b"Host header" in reply.body and b"Traceback" not in reply.body
    server.assert_survived()
    assert set(os.listdir(server.config.output_dir)) == before and server.written() == written


def test_a_url_answer_names_the_host_the_client_used(server):
    reply = server.call("POST", "/v1/images/generations", {"prompt": TINY_PROMPT, "response_format": "url",
                                                          "steps": 1}, headers={"Host": f"localhost:{server.port}"})
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["data"][0]["url"].startswith(f"http://localhost:{server.port}/images/flux2_")
