"""--cors-origin ORIGIN lets pages of exactly that origin call the API; every other origin
stays refused, preflights of other origins are refused, and the API key is still needed."""

from __future__ import annotations

import pytest

from flux2cli.errors import InvalidRequest
from flux2cli.server.config import ServerConfig, parse_origin
from guarded_server import GuardedServer, refused
from server_fixtures import TINY_PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FRONT_END = "https://app.example.com"
KEY = "cors-key"


@pytest.fixture(scope="module")
def shared(tiny_engine, tmp_path_factory):
    config = ServerConfig(output_dir=tmp_path_factory.mktemp("cors-out"), api_key=KEY, cors_origin=FRONT_END)
    with GuardedServer(tiny_engine, config) as live:
        yield live


def test_by_default_no_other_origin_gets_in(server):
    reply = server.call("GET", "/status", headers={"Origin": FRONT_END})
    refused(server, reply, 403)
    assert "Access-Control-Allow-Origin" not in reply.headers
    preflight = server.call("OPTIONS", "/generate", headers={"Origin": FRONT_END,
                                                             "Access-Control-Request-Method": "POST"})
    assert preflight.status in (403, 405) and "Access-Control-Allow-Origin" not in preflight.headers


def test_the_allowed_origin_gets_a_preflight_answer_without_the_key(shared):
    reply = shared.call("OPTIONS", "/generate", headers={
        "Origin": FRONT_END, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key"})
    assert reply.status == 204
    assert reply.headers["Access-Control-Allow-Origin"] == FRONT_END
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]
    assert "X-API-Key" in reply.headers["Access-Control-Allow-Headers"]
    assert "Origin" in reply.headers["Vary"] and "Access-Control-Allow-Credentials" not in reply.headers


def test_the_allowed_origin_still_needs_the_key_and_then_generates(shared):
    cross = {"Origin": FRONT_END, "Sec-Fetch-Site": "cross-site"}
    reply = shared.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1}, headers=cross)
    refused(shared, reply, 401)
    assert reply.headers["Access-Control-Allow-Origin"] == FRONT_END  # so the page can read why
    reply = shared.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1}, headers={**cross, "X-API-Key": KEY})
    assert reply.status == 200 and reply.headers["Access-Control-Allow-Origin"] == FRONT_END
    assert "Retry-After" in reply.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil.example",
                                    "http://app.example.com", "null"])
def test_every_other_origin_stays_refused(shared, origin):
    headers = {"Origin": origin, "X-API-Key": KEY}
    reply = shared.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1}, headers=headers)
    refused(shared, reply, 403)
    assert "Access-Control-Allow-Origin" not in reply.headers
    preflight = shared.call("OPTIONS", "/generate", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status in (403, 405) and "Access-Control-Allow-Origin" not in preflight.headers


@pytest.mark.parametrize("value", ["*", "null", "https://a.example/path", "app.example.com", "ftp://a.example"])
def test_only_a_plain_origin_can_be_allowed(value):
    with pytest.raises(InvalidRequest, match="--cors-origin"):
        parse_origin(value)
