"""Remote text encoders: the client against a real aiohttp server on 127.0.0.1, and our own
encoder server (``make_encoder_app``) in a loopback round trip."""

import asyncio
import io
import json
import math
import os
from pathlib import Path

import pytest
import torch
from aiohttp import web
from PIL import Image
from safetensors.torch import save as save_safetensors

from flux2cli.errors import EncoderError, InvalidRequest
from flux2cli.encoder.server import make_encoder_app
from flux2cli.encoder.cache import EmbeddingKey
from flux2cli.pipeline.loading import LoadOptions
from flux2cli.encoder.remote import (
    RemoteTextEncoder,
    RetryPolicy,
    check_embeddings,
    decode_embeddings,
    token_for,
)
from flux2cli.pipeline.request import GenerationRequest

from standins import ThreadedServer, mean_abs_diff, pixels, run_flux2

L, D = 8, 12  # sequence length and width of the fake endpoint's embeddings
KEY = EmbeddingKey("dev", "a cat", L, (10, 20, 30))
FAST_RETRY = RetryPolicy(attempts=3, backoff=0.01, max_wait=0.05)
PROMPT = "a red circle on a blue background"
SEED, STEPS, SIZE = 7, 10, 64


def _embeds(shape=(1, L, D), dtype=torch.float32):
    return torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape).div(100).to(dtype)


class Evil:
    """Unpickling this would create ``marker``: proof that nothing is unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


STATE = web.AppKey("state", dict)


def _fake_endpoint(marker: Path) -> web.Application:
    state = {"flaky": 0, "auth": []}

    async def reply(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        body = await request.json()
        assert isinstance(body.get("prompt"), str)
        state["auth"].append(request.headers.get("Authorization"))
        if kind == "safetensors":
            return web.Response(body=save_safetensors({"prompt_embeds": _embeds()}))
        if kind == "torch":  # what the public [dev] endpoint sends: torch.save of a bf16 tensor
            buffer = io.BytesIO()
            torch.save(_embeds(dtype=torch.bfloat16), buffer)
            return web.Response(body=buffer.getvalue())
        if kind == "pickle-zip":
            buffer = io.BytesIO()
            torch.save({"prompt_embeds": _embeds(), "x": Evil(str(marker))}, buffer)
            return web.Response(body=buffer.getvalue())
        if kind == "pickle-raw":
            import pickle

            return web.Response(body=pickle.dumps(Evil(str(marker))))
        if kind == "oversized":  # declared too large
            return web.Response(body=b"\0" * (10 * 1024 * 1024))
        if kind == "oversized-stream":  # chunked, no Content-Length
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(40):
                await response.write(b"\0" * 262144)
            await response.write_eof()
            return response
        if kind == "wrong-shape":
            return web.Response(body=save_safetensors({"prompt_embeds": _embeds((1, L, D + 4))}))
        if kind == "nan":
            bad = _embeds()
            bad[0, 3, 5] = float("nan")
            return web.Response(body=save_safetensors({"prompt_embeds": bad}))
        if kind == "integers":
            return web.Response(body=save_safetensors({"prompt_embeds": torch.ones(1, L, D, dtype=torch.int64)}))
        if kind == "flaky":
            state["flaky"] += 1
            if state["flaky"] == 1:
                return web.Response(status=503, text="starting", headers={"Retry-After": "0"})
            return web.Response(body=save_safetensors({"prompt_embeds": _embeds()}))
        if kind == "paused":
            return web.Response(status=503, text='{"error": "space is paused"}')
        if kind == "slow":
            await asyncio.sleep(3)
            return web.Response(body=save_safetensors({"prompt_embeds": _embeds()}))
        if kind == "unauthorized":
            return web.Response(status=401, text="Invalid credentials")
        raise web.HTTPNotFound()

    app = web.Application()
    app[STATE] = state
    app.router.add_post("/{kind}", reply)
    return app


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    marker = tmp_path_factory.mktemp("evil") / "pwned"
    with ThreadedServer(_fake_endpoint(marker)) as server:
        server.marker = marker
        yield server


def _client(server, kind, **kwargs):
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeout", 5.0)
    return RemoteTextEncoder(server.url(f"/{kind}"), embed_dim=D, **kwargs)


def test_safetensors_and_torch_answers_are_read(endpoint):
    assert torch.equal(_client(endpoint, "safetensors").encode(KEY), _embeds())
    embeds = _client(endpoint, "torch", dtype=torch.float32).encode(KEY)
    assert embeds.dtype == torch.float32 and torch.allclose(embeds, _embeds(), atol=0.05)


@pytest.mark.parametrize("kind", ["pickle-zip", "pickle-raw"])
def test_pickles_are_refused_never_unpickled(endpoint, kind):
    with pytest.raises(EncoderError, match="refusing to load it"):
        _client(endpoint, kind).encode(KEY)
    assert not endpoint.marker.exists()


@pytest.mark.parametrize("kind,message", [
    ("oversized", "more than the"),
    ("oversized-stream", "more than the"),
    ("wrong-shape", r"shape \(1, 8, 16\); this model needs \(1, 8, 12\)"),
    ("nan", "NaN or infinite"),
    ("integers", "expected a float tensor"),
    ("paused", "unavailable \\(503: space is paused\\)"),
    ("unauthorized", "refused the request \\(401\\)"),
])
def test_bad_answers_are_refused_with_one_line(endpoint, kind, message):
    with pytest.raises(EncoderError, match=message) as info:
        _client(endpoint, kind, max_bytes=1024 * 1024).encode(KEY)
    assert "\n" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_503_is_retried_with_back_off(endpoint):
    endpoint.app[STATE]["flaky"] = 0
    assert torch.equal(_client(endpoint, "flaky").encode(KEY), _embeds())
    assert endpoint.app[STATE]["flaky"] == 2


def test_slow_endpoints_time_out(endpoint):
    with pytest.raises(EncoderError, match="did not answer within 0.5 s"):
        _client(endpoint, "slow", timeout=0.5).encode(KEY)


def test_hub_tokens_go_only_to_hugging_face_hosts(endpoint, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.delenv("FLUX2_ENCODER_TOKEN", raising=False)
    assert token_for("https://remote-text-encoder-flux-2.huggingface.co/predict") == "hf_secret"
    assert token_for(endpoint.url("/safetensors")) is None
    monkeypatch.setenv("FLUX2_ENCODER_TOKEN", "own-key")
    assert token_for(endpoint.url("/safetensors")) == "own-key"


def test_payload_decoding_directly():
    assert torch.equal(decode_embeddings(save_safetensors({"prompt_embeds": _embeds()})), _embeds())
    with pytest.raises(EncoderError, match="neither safetensors nor"):
        decode_embeddings(b"<html>paused</html>")
    assert check_embeddings(_embeds()[0], L, D).shape == (1, L, D)  # a missing batch axis is fine


# --------------------------------------------------------------------------- our encoder server


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_cache(si):
    os.environ.update(HF_HUB_CACHE=str(si.cache), HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def dev_local(si):
    from flux2cli.pipeline.engine import Engine

    old = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    _with_cache(si)
    try:
        engine = Engine.load("dev", LoadOptions(local_encoder=True))
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return engine


@pytest.fixture(scope="module")
def encoder_server(dev_local):
    with ThreadedServer(make_encoder_app(dev_local, api_key="s3cret")) as server:
        yield server


def _request():
    return GenerationRequest.create(PROMPT, model="dev", steps=STEPS, seed=SEED, width=SIZE, height=SIZE)


def test_loopback_round_trip_gives_the_same_image_as_local_encoding(si, dev_local, encoder_server, monkeypatch):
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    monkeypatch.setenv("FLUX2_ENCODER_TOKEN", "s3cret")
    notes = []
    remote = Engine.load("dev", LoadOptions(remote_encoder=encoder_server.url(), notify=notes.append))
    assert notes == []
    # Loaded without its text encoder, to save the memory.
    assert remote.pipe.text_encoder is None and remote.pipe.tokenizer is None
    assert remote.describe() == {"model": "FLUX.2-dev (full)", "encoder": "remote encoder",
                                 "description": "FLUX.2-dev (full) with remote encoder"}
    image = remote.generate(_request())[0].image
    assert (pixels(image) == pixels(dev_local.generate(_request())[0].image)).all()


def test_dev_reads_flux2_encoder_url(si, encoder_server, monkeypatch):
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    monkeypatch.setenv("FLUX2_ENCODER_URL", encoder_server.url())
    monkeypatch.setenv("FLUX2_ENCODER_TOKEN", "s3cret")
    assert Engine.load("dev").describe()["encoder"] == "remote encoder"
    # klein models do not: the variable names the [dev] encoder.
    assert Engine.load("klein-4b").describe()["encoder"] == "local encoder"


def test_unreachable_or_refusing_encoders_fall_back_to_local_with_one_line(si, encoder_server, monkeypatch):
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    monkeypatch.delenv("FLUX2_ENCODER_TOKEN", raising=False)
    notes = []
    engine = Engine.load("dev", LoadOptions(remote_encoder=encoder_server.url(), notify=notes.append))
    assert engine.describe()["encoder"] == "local encoder" and engine.pipe.text_encoder is not None
    assert len(notes) == 1 and "refused the request (401)" in notes[0] and notes[0].endswith("local text encoder")
    notes.clear()
    Engine.load("klein-4b", LoadOptions(remote_encoder="http://127.0.0.1:9/predict", notify=notes.append))
    assert len(notes) == 1 and "cannot be reached" in notes[0]
    with pytest.raises(InvalidRequest, match="exclude each other"):
        Engine.load("dev", LoadOptions(local_encoder=True, remote_encoder=encoder_server.url()))
    with pytest.raises(InvalidRequest, match="takes an http"):
        LoadOptions(remote_encoder="localhost:2223/predict").validate()


def test_encoder_server_checks_its_input(encoder_server):
    import urllib.error
    import urllib.request

    def post(body, key="s3cret"):
        request = urllib.request.Request(encoder_server.url(), data=body, method="POST",
                                         headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    assert post(b'{"prompt": "x"}', key="wrong")[0] == 401
    status, body = post(b"not json")
    assert status == 400 and json.loads(body) == {"success": False, "error": 'send JSON: {"prompt": "..."}'}
    assert post(json.dumps({"prompt": "x" * 5000}).encode())[0] == 400
    assert post(json.dumps({"prompt": 3}).encode())[0] == 400
    with urllib.request.urlopen(encoder_server.url("/health"), timeout=30) as response:
        assert json.loads(response.read())["model"] == "FLUX.2-dev (full)"


def test_flux2_generate_gguf_path_with_the_self_hosted_encoder(si, dev_local, encoder_server, tmp_path, monkeypatch):
    si.use_cache(monkeypatch)
    gguf = si.gguf("Q8_0", "bfl")
    result = run_flux2("generate", PROMPT, "--gguf", str(gguf), "--remote-encoder", encoder_server.url(),
                       "--steps", str(STEPS), "--seed", str(SEED), "--width", str(SIZE), "--height", str(SIZE),
                       "--output-dir", str(tmp_path), "--json", env={"FLUX2_ENCODER_TOKEN": "s3cret"})
    assert result.returncode == 0, result.stderr
    assert "local text encoder" not in result.stderr and "Traceback" not in result.stderr
    path = Path(json.loads(result.stdout)["images"][0]["path"])
    with Image.open(path) as png:
        assert "FLUX.2-dev GGUF Q8" in json.dumps(dict(png.text))
        assert mean_abs_diff(png, dev_local.generate(_request())[0].image) < 3.0


def test_a_paused_default_endpoint_means_local_with_one_line(si, endpoint, monkeypatch):
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    monkeypatch.setenv("FLUX2_ENCODER_URL", endpoint.url("/paused"))
    engine = Engine.load("dev")
    assert engine.describe()["encoder"] == "local encoder"
    assert engine.load_notices == (f"the remote encoder at http://127.0.0.1:{endpoint.port} is unavailable "
                                   "(503: space is paused): prompts are encoded by the local text encoder",)
