"""DNS rebinding, cross-site requests, content types and the API key.

The record: Ollama CVE-2024-28224 (DNS rebinding to a loopback API), drive-by POSTs from
web pages to local servers (a text/plain or form body needs no CORS preflight).
"""

from __future__ import annotations

import hmac

import pytest

from flux2cli.server.config import ServerConfig
from guarded_server import GuardedServer, raw_request, refused
from server_fixtures import TINY_PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def keyed(tiny_engine, tmp_path_factory):
    config = ServerConfig(output_dir=tmp_path_factory.mktemp("keyed-out"), api_key=KEY)
    with GuardedServer(tiny_engine, config) as live:
        yield live


# -- Host: DNS rebinding -------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:2222", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "192.168.1.10", "0.0.0.0", "",
                                  "127.0.0.1:80@evil.example", "localhost:evil", "[::1]:x",
                                  "127.0.0.1:\u00b2"])  # "²".isdigit() is True
def test_foreign_host_headers_are_refused_while_on_loopback(server, host):
    for method, path, body in (("GET", "/status", None), ("POST", "/generate", {"prompt": "x"}), ("GET", "/", None)):
        reply = server.call(method, path, body, headers={"Host": host})
        assert "localhost" in refused(server, reply, 403)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "127.1.2.3", "app.localhost", "LOCALHOST"])
def test_loopback_host_headers_are_accepted(server, host):
    reply = server.call("GET", "/status", headers={"Host": f"{host}:{server.port}"})
    assert reply.status == 200


def test_a_request_without_host_header_is_refused(server):
    answer = raw_request(server.port, b"GET /status HTTP/1.0")
    refused(server, answer, 403)


# -- cross-site requests -------------------------------------------------------------


def test_cross_site_requests_are_refused(server):
    own = f"http://127.0.0.1:{server.port}"
    refused_cases = [
        ("POST", "/generate", {"Origin": "http://evil.example"}),
        ("POST", "/generate", {"Origin": "https://evil.example"}),
        ("POST", "/generate", {"Origin": "null"}),  # sandboxed frames, file:// pages
        ("POST", "/jobs", {"Origin": "null"}),
        ("POST", "/generate", {"Origin": f"http://127.0.0.1:{server.port + 1}"}),  # another local app
        ("POST", "/generate", {"Origin": f"http://localhost:{server.port}"}),
        ("POST", "/generate", {"Sec-Fetch-Site": "cross-site"}),
        ("POST", "/jobs", {"Sec-Fetch-Site": "cross-site", "Origin": own}),
        ("GET", "/status", {"Origin": "https://evil.example"}),
        ("GET", "/jobs/x/events", {"Sec-Fetch-Site": "cross-site"}),
        ("GET", "/images/flux2_20250101_000000_deadbeef.png", {"Sec-Fetch-Site": "cross-site"}),
        ("DELETE", "/jobs/x", {"Origin": "http://evil.example"}),
    ]
    for method, path, headers in refused_cases:
        body = {"prompt": TINY_PROMPT, "steps": 1} if method == "POST" else None
        refused(server, server.call(method, path, body, headers=headers), 403)
    assert server.written() == set()  # none of them generated anything
    same = server.call("POST", "/generate", {"steps": 1}, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert "prompt is required" in refused(server, same, 400)  # got past the checks
    navigation = server.call("GET", "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert navigation.status == 200  # a link from elsewhere may open the UI


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_posts_need_a_json_content_type(server, content_type):
    """The content types a page may send cross-site without a preflight are refused."""
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/generate", "/jobs"):
        reply = server.call("POST", path, raw=b'{"prompt": "x", "steps": 1}', headers=headers)
        assert "application/json" in refused(server, reply, 415)
    ok = server.call("POST", "/generate", raw=b'{"steps": 1}',
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status == 400


# -- the API key ---------------------------------------------------------------------


def test_the_api_key_guards_everything_but_the_page(keyed):
    assert keyed.call("GET", "/").status == 200
    assert keyed.call("GET", "/static/app.js").status == 200
    guarded = [("GET", "/status", None), ("GET", "/model-info", None), ("GET", "/openapi.json", None),
               ("GET", "/images/flux2_20250101_000000_deadbeef.png", None), ("POST", "/generate", {"prompt": "x"}),
               ("POST", "/jobs", {"prompt": "x"}), ("GET", "/jobs/x", None), ("DELETE", "/jobs/x", None),
               ("GET", "/jobs/x/events", None)]
    wrong = [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
             {"Authorization": f"Basic {KEY}"}, {"X-API-Key": KEY[:-1]}, {"X-API-Key": KEY + "x"},
             {"X-API-Key": ""}, {"Authorization": "Bearer "}]
    for method, path, body in guarded:
        for headers in wrong:
            reply = keyed.call(method, path, body, headers=headers)
            assert reply.status == 401, (method, path, headers, reply.status)
            assert "API key" in refused(keyed, reply, 401) and KEY not in reply.text
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"authorization": f"bearer {KEY}"}):
        assert keyed.call("GET", "/status", headers=headers).status == 200
    reply = keyed.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1}, headers={"X-API-Key": KEY})
    assert reply.status == 200
    image = f"/images/{reply.json()['images'][0]['filename']}"
    assert keyed.call("GET", image, headers={"Authorization": f"Bearer {KEY}"}).status == 200
    assert keyed.call("GET", image).status == 401


def test_undecodable_key_bytes_are_a_wrong_key_not_a_crash(keyed):
    for value in (b"\xff\xfe\xfd", KEY.encode() + b"\xc3", b"\xc3\xa9" * 40):
        answer = raw_request(keyed.port, b"GET /model-info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + value)
        refused(keyed, answer, 401)


def test_keys_are_compared_in_constant_time(keyed, monkeypatch):
    """The comparison goes through hmac.compare_digest, never ``==``: spy on it."""
    seen = []
    real = hmac.compare_digest

    def spy(given, expected):
        seen.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert keyed.call("GET", "/model-info", headers={"X-API-Key": "guess"}).status == 401
    assert keyed.call("GET", "/model-info", headers={"Authorization": f"Bearer {KEY}"}).status == 200
    assert (b"guess", KEY.encode()) in seen and (KEY.encode(), KEY.encode()) in seen
