"""A hostile remote text encoder behind a running server, and our own encoder server abused.

The record: torch.load CVE-2025-32434 (code run while loading a "tensor"), clients that
wait forever on a server that drips, or read whatever size it declares. Here `flux2 serve`
runs the tiny model with ``--remote-encoder`` pointing at ``hostile_encoder``: every bad
answer is a 502 naming the encoder, within the timeout, nothing executed, nothing leaked,
and the next good answer generates an image. The client alone is tested in
test_remote_encoder.py.
"""

from __future__ import annotations

import hmac
import json
import time
import urllib.error
import urllib.request

import pytest
import torch

from flux2cli.encoder.remote import RemoteTextEncoder
from flux2cli.encoder.server import MAX_BODY_BYTES, make_encoder_app
from flux2cli.pipeline.engine import Engine
from flux2cli.server.config import ServerConfig
from guarded_server import GuardedServer, raw_request, refused
from hostile_encoder import STATE, hostile_encoder_app
from standins import FixedEncoder, ThreadedServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "encoder-token-that-must-not-leak"
TIMEOUT = 1.0  # the whole answer, not each read; under hostile_encoder.HOLD_SECONDS


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    return tmp_path_factory.mktemp("evil") / "pwned"


@pytest.fixture(scope="module")
def encoder(tiny_engine, marker):
    width = tiny_engine.pipe.transformer.config.joint_attention_dim
    with ThreadedServer(hostile_encoder_app(tiny_engine.spec.max_sequence_length, width, marker)) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def remote(tiny_engine, encoder, tmp_path_factory):
    """`flux2 serve --model tiny --remote-encoder URL`: the tiny pipeline, prompts encoded remotely."""
    width = tiny_engine.pipe.transformer.config.joint_attention_dim
    client = RemoteTextEncoder(encoder.url("/predict"), embed_dim=width, device=tiny_engine.device,
                               token=TOKEN, timeout=TIMEOUT, retry=False)
    engine = Engine(tiny_engine.spec, tiny_engine.pipe, tiny_engine.device, encoder=client)
    with GuardedServer(engine, ServerConfig(output_dir=tmp_path_factory.mktemp("remote-out"))) as live:
        yield live


def _generate_with(remote, encoder, mode: str, prompt: str):
    encoder.app[STATE]["mode"] = mode
    started = time.monotonic()
    reply = remote.call("POST", "/generate", {"prompt": prompt, "steps": 1, "seed": 3})
    return reply, time.monotonic() - started


@pytest.mark.parametrize(("mode", "words"), [
    ("pickle-in-torch-file", "not plain tensors"),
    ("plain-pickle", "neither safetensors nor a torch tensor file"),
    ("legacy-torch-pickle", "neither safetensors nor a torch tensor file"),
    ("declares-2gb", f"announced {2 * 1024**3} bytes, more than the"),
    ("endless", "more than the"),
    ("drip", f"did not answer within {TIMEOUT:g} s"),
    ("silent", f"did not answer within {TIMEOUT:g} s"),
    ("wrong-shape", "embeddings of shape (1, 32, 100)"),
    ("wrong-length", "embeddings of shape (1, 64, 96)"),
    ("nan", "NaN or infinite"),
    ("inf", "NaN or infinite"),
    ("http-500-traceback", "answered 500"),
    ("http-500-echo", "answered 500"),
    ("redirect", "answered a redirect (302)"),
    ("redirect-307", "answered a redirect (307)"),
    ("malformed-status", "malformed HTTP answer"),
    ("cut-short", "closed the connection after 10 of 1000 bytes"),
    ("html", "neither safetensors nor a torch tensor file"),
])
def test_bad_encoder_answers_are_a_502_in_time_and_nothing_runs(remote, encoder, marker, mode, words):
    reply, seconds = _generate_with(remote, encoder, mode, f"a red circle, encoded by {mode}")
    message = refused(remote, reply, 502)
    assert message.startswith(f"the remote encoder at http://127.0.0.1:{encoder.port}"), message
    assert words in message, message
    assert seconds < TIMEOUT + 4, f"{mode} held the request for {seconds:.1f} s"
    assert TOKEN not in reply.text and "Traceback" not in reply.text and "/srv/" not in reply.text
    assert not marker.exists(), "the encoder's pickle was executed"
    assert encoder.app[STATE]["stolen"] == [], "the token followed a redirect"
    assert encoder.app[STATE]["auth"][-1] == f"Bearer {TOKEN}"  # it was sent, to the encoder only


def test_the_server_generates_again_once_the_encoder_behaves(remote, encoder):
    reply, _ = _generate_with(remote, encoder, "good", "a red circle after all that")
    assert reply.status == 200, reply.body[:300]
    assert remote.call("GET", "/model-info").json()["encoder"] == "remote encoder"


# -- our own encoder server (`make_encoder_app`), abused --------------------------------


@pytest.fixture(scope="module")
def own_encoder(tiny_engine):
    spec = tiny_engine.spec
    encoder = FixedEncoder(torch.zeros(1, spec.max_sequence_length, 8))
    with ThreadedServer(make_encoder_app(encoder, spec=spec, api_key=TOKEN)) as server:
        yield server


def _post(server, body: bytes, headers: dict[str, str]):
    headers = {"Content-Type": "application/json", **headers}  # urllib's default is a form
    request = urllib.request.Request(server.url(), data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _alive(server) -> None:
    request = urllib.request.Request(server.url("/health"), headers={"X-API-Key": TOKEN})  # key-only, as /predict
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["success"] is True


@pytest.mark.parametrize(("body", "headers", "status", "words"), [
    (b'{"prompt": "x"}', {}, 401, "API key"),
    (b'{"prompt": "x"}', {"Authorization": "Bearer wrong"}, 401, "API key"),
    (b'{"prompt": "x"}', {"X-API-Key": TOKEN[:-1]}, 401, "API key"),
    (b"not json", {"Authorization": f"Bearer {TOKEN}"}, 400, "send JSON"),
    (b'["x"]', {"Authorization": f"Bearer {TOKEN}"}, 400, "prompt"),
    (b'{"prompt": 3}', {"Authorization": f"Bearer {TOKEN}"}, 400, "prompt"),
    (b'{"prompt": "a \\ud800"}', {"Authorization": f"Bearer {TOKEN}"}, 400, "unpaired surrogates"),
    (json.dumps({"prompt": "x" * 5000}).encode(), {"Authorization": f"Bearer {TOKEN}"}, 400, "characters"),
    (b'{"prompt": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}', {"Authorization": f"Bearer {TOKEN}"}, 413, "limit is 64 KB"),
])
def test_our_encoder_server_refuses_bad_requests_in_json(own_encoder, body, headers, status, words):
    code, answer = _post(own_encoder, body, {"Content-Type": "application/json", **headers})
    assert code == status, (code, answer[:200])
    parsed = json.loads(answer)
    assert parsed["success"] is False and words in parsed["error"] and TOKEN not in parsed["error"]
    _alive(own_encoder)


def test_our_encoder_server_takes_undecodable_key_bytes_as_a_wrong_key(own_encoder):
    answer = raw_request(own_encoder.port, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                           b"Content-Type: application/json\r\nContent-Length: 15\r\n"
                                           b"X-API-Key: \xff\xfe" + TOKEN.encode(), b'{"prompt": "x"}')
    assert answer.status == 401 and json.loads(answer.body)["success"] is False
    _alive(own_encoder)


def test_our_encoder_server_compares_keys_in_constant_time(own_encoder, monkeypatch):
    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    assert _post(own_encoder, b'{"prompt": "x"}', {"Authorization": "Bearer guess"})[0] == 401
    assert _post(own_encoder, b'{"prompt": "x"}', {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert (b"guess", TOKEN.encode()) in seen and (TOKEN.encode(), TOKEN.encode()) in seen
