"""Remote text encoders: the client against a real aiohttp server on 127.0.0.1, and our own
encoder server (``make_encoder_app``) in a loopback round trip."""

import asyncio
import io
import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
from aiohttp import web
from PIL import Image
from safetensors.torch import save as save_safetensors

from flux2cli.encoder.cache import EmbeddingKey
from flux2cli.encoder.remote import RemoteTextEncoder, check_embeddings, decode_embeddings, token_for
from flux2cli.encoder.server import make_encoder_app
from flux2cli.errors import EncoderError, InvalidRequest
from flux2cli.pipeline.loading import LoadOptions
from flux2cli.pipeline.request import GenerationRequest

from standins import ThreadedServer, mean_abs_diff, pixels, run_flux2

L, D = 8, 12  # sequence length and width of the fake endpoint's embeddings
KEY = EmbeddingKey("dev", "a cat", L, (10, 20, 30))
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


HOLD = 3.0  # seconds an endpoint stalls: past the short client deadlines below, short enough to shut down


def _fake_endpoint(marker: Path) -> web.Application:
    state = {"flaky": 0, "auth": [], "stolen": [], "calls": {}}

    async def reply(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        body = await request.json()
        assert isinstance(body.get("prompt"), str)
        state["auth"].append(request.headers.get("Authorization"))
        state["calls"][kind] = state["calls"].get(kind, 0) + 1
        calls = state["calls"][kind]
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
        if kind == "redirect":
            raise web.HTTPTemporaryRedirect(location=str(request.url.with_path("/steal")))
        if kind == "endless":  # chunked zeros until the client hangs up
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                for _ in range(100_000):
                    await response.write(b"\0" * 65536)
            except (ConnectionError, RuntimeError):
                pass
            return response
        if kind == "declares-too-much":  # a huge Content-Length, a first chunk, then nothing for a while
            response = web.StreamResponse(headers={"Content-Length": str(2 * 1024**3)})
            await response.prepare(request)
            await response.write(b"\0" * 1024)
            await asyncio.sleep(HOLD)
            return response
        if kind == "drip-body":  # an honest small Content-Length, one byte at a time
            response = web.StreamResponse(headers={"Content-Length": "4096"})
            await response.prepare(request)
            try:
                for _ in range(4096):
                    await response.write(b"\0")
                    await asyncio.sleep(0.02)
            except (ConnectionError, RuntimeError):
                pass
            return response
        if kind == "drip-headers":  # each byte of the status line and headers well inside any per-read timeout
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Padding: " + b"x" * 200:
                    request.transport.write(bytes([byte]))
                    await asyncio.sleep(0.02)
            except (ConnectionError, RuntimeError, AttributeError):
                pass
            request.transport.close() if request.transport else None
            return web.Response()
        if kind.startswith("busy-"):  # busy-STATUS-RETRYAFTER-FAILURES: answers STATUS for the first FAILURES calls
            _, status, retry_after, failures = kind.split("-")
            if calls <= int(failures):
                headers = {"Retry-After": retry_after} if retry_after != "none" else {}
                return web.Response(status=int(status), text="warming up", headers=headers)
            return web.Response(body=save_safetensors({"prompt_embeds": _embeds()}))
        raise web.HTTPNotFound()

    async def steal(request: web.Request) -> web.Response:
        state["stolen"].append(request.headers.get("Authorization"))
        return web.Response(body=save_safetensors({"prompt_embeds": _embeds()}))

    app = web.Application()
    app[STATE] = state
    app.router.add_route("*", "/steal", steal)
    app.router.add_post("/{kind}", reply)
    return app


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    marker = tmp_path_factory.mktemp("evil") / "pwned"
    with ThreadedServer(_fake_endpoint(marker)) as server:
        server.marker = marker
        yield server


def _client(server, kind, **kwargs):
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


def test_503_with_retry_after_is_retried_once(endpoint):
    endpoint.app[STATE]["flaky"] = 0
    assert torch.equal(_client(endpoint, "flaky").encode(KEY), _embeds())
    assert endpoint.app[STATE]["flaky"] == 2


def test_encoding_from_inside_an_event_loop(endpoint):
    """A notebook runs an event loop in its main thread; the client must still answer there."""

    async def in_a_notebook_cell():
        return _client(endpoint, "safetensors").encode(KEY)

    assert torch.equal(asyncio.run(in_a_notebook_cell()), _embeds())


def test_slow_endpoints_time_out(endpoint):
    with pytest.raises(EncoderError, match="did not answer within 0.5 s"):
        _client(endpoint, "slow", timeout=0.5).encode(KEY)


def _timed_failure(client) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(EncoderError) as info:
        client.encode(KEY)
    return str(info.value), time.monotonic() - started


@pytest.mark.parametrize("kind", ["drip-body", "drip-headers"])
def test_one_deadline_for_the_whole_call_however_slowly_it_drips(endpoint, kind):
    # Every byte comes well inside a per-read timeout; only a deadline on the whole call stops it.
    message, seconds = _timed_failure(_client(endpoint, kind, timeout=0.6))
    assert "did not answer within 0.6 s" in message and "\n" not in message
    assert seconds < 1.5, f"{kind} held the call for {seconds:.1f} s"


def test_redirects_are_refused_and_the_token_stays_home(endpoint):
    message, _ = _timed_failure(_client(endpoint, "redirect", token="tok-123"))
    assert "answered a redirect (307); give --remote-encoder the final URL" in message
    assert endpoint.app[STATE]["stolen"] == [], "the redirect was followed"
    assert endpoint.app[STATE]["auth"][-1] == "Bearer tok-123"  # sent, to the endpoint only


def test_the_byte_cap_is_checked_while_streaming(endpoint):
    # Without a count as the bytes arrive, an endless body runs into the deadline instead.
    message, seconds = _timed_failure(_client(endpoint, "endless", max_bytes=256 * 1024, timeout=10.0))
    assert "sent more than the 262144-byte limit for embeddings" in message
    assert seconds < 3, f"read for {seconds:.1f} s past the cap"


def test_a_declared_length_over_the_cap_is_refused_before_reading(endpoint):
    message, seconds = _timed_failure(_client(endpoint, "declares-too-much", max_bytes=1024 * 1024, timeout=10.0))
    assert f"announced {2 * 1024**3} bytes, more than the 1048576-byte limit" in message
    assert seconds < HOLD / 2, "the client waited for a body it had already refused"


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured_once_within_the_deadline(endpoint, status):
    calls = endpoint.app[STATE]["calls"]
    kind = f"busy-{status}-1-1"  # busy once, asking for one second
    started = time.monotonic()
    assert torch.equal(_client(endpoint, kind, timeout=5.0).encode(KEY), _embeds())
    assert calls[kind] == 2 and time.monotonic() - started >= 1.0
    kind = f"busy-{status}-0-5"  # busy five times: one retry, then the reason
    message, _ = _timed_failure(_client(endpoint, kind))
    assert calls[kind] == 2 and f"({status}: warming up)" in message and "try later" in message


def test_a_retry_after_past_the_deadline_is_not_waited_for(endpoint):
    calls = endpoint.app[STATE]["calls"]
    message, seconds = _timed_failure(_client(endpoint, "busy-503-120-1", timeout=5.0))
    assert message.endswith("is unavailable (503: warming up) and asks to be retried in 120 s; "
                            "try later or use --local-encoder"), message
    assert calls["busy-503-120-1"] == 1 and seconds < 1
    message, _ = _timed_failure(_client(endpoint, "busy-503-none-1"))  # no Retry-After: no retry either
    assert calls["busy-503-none-1"] == 1 and "unavailable (503: warming up); try later" in message


def test_hub_tokens_go_only_to_hugging_face_hosts(endpoint, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert token_for("https://remote-text-encoder-flux-2.huggingface.co/predict", "own-key") == "hf_secret"
    assert token_for(endpoint.url("/safetensors"), None) is None
    assert token_for(endpoint.url("/safetensors"), "own-key") == "own-key"


def test_payload_decoding_directly():
    assert torch.equal(decode_embeddings(save_safetensors({"prompt_embeds": _embeds()})), _embeds())
    with pytest.raises(EncoderError, match="neither safetensors nor"):
        decode_embeddings(b"<html>paused</html>")
    assert check_embeddings(_embeds()[0], L, D).shape == (1, L, D)  # a missing batch axis is fine


# --------------------------------------------------------------------------- our encoder server


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dev_local(si):
    from flux2cli.pipeline.engine import Engine

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # module scope: conftest's per-test environment is not set yet
    try:
        engine = Engine.load("dev", LoadOptions(local_encoder=True, hub_cache=si.cache))
    finally:
        os.environ.pop("HF_HUB_OFFLINE", None) if old is None else os.environ.__setitem__("HF_HUB_OFFLINE", old)
    return engine


@pytest.fixture(scope="module")
def encoder_server(dev_local):
    with ThreadedServer(make_encoder_app(dev_local, api_key="s3cret")) as server:
        yield server


def _request():
    return GenerationRequest.create(PROMPT, model="dev", steps=STEPS, seed=SEED, width=SIZE, height=SIZE)


def test_loopback_round_trip_gives_the_same_image_as_local_encoding(si, dev_local, encoder_server):
    from flux2cli.pipeline.engine import Engine

    notes = []
    remote = Engine.load("dev", LoadOptions(remote_encoder=encoder_server.url(), encoder_token="s3cret",
                                            hub_cache=si.cache, notify=notes.append))
    assert notes == []
    # Loaded without its text encoder, to save the memory.
    assert remote.pipe.text_encoder is None and remote.pipe.tokenizer is None
    assert remote.describe() == {"model": "FLUX.2-dev (full)", "encoder": "remote encoder",
                                 "description": "FLUX.2-dev (full) with remote encoder"}
    image = remote.generate(_request())[0].image
    assert (pixels(image) == pixels(dev_local.generate(_request())[0].image)).all()


def test_dev_reads_flux2_encoder_url_through_the_front_ends(si, encoder_server, monkeypatch):
    from flux2cli.api import load_options
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    monkeypatch.setenv("FLUX2_ENCODER_URL", encoder_server.url())
    monkeypatch.setenv("FLUX2_ENCODER_TOKEN", "s3cret")
    assert Engine.load("dev", load_options()).describe()["encoder"] == "remote encoder"
    # klein models do not: the variable names the [dev] encoder.
    assert Engine.load("klein-4b", load_options()).describe()["encoder"] == "local encoder"
    # The pipeline layer reads no settings: without the front end, the variables do nothing.
    assert Engine.load("dev", LoadOptions(hub_cache=si.cache)).describe()["encoder"] == "local encoder"


def test_unreachable_or_refusing_encoders_fall_back_to_local_with_one_line(si, encoder_server, monkeypatch):
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    notes = []
    engine = Engine.load("dev", LoadOptions(remote_encoder=encoder_server.url(), hub_cache=si.cache,
                                            notify=notes.append))
    assert engine.describe()["encoder"] == "local encoder" and engine.pipe.text_encoder is not None
    assert len(notes) == 1 and "refused the request (401)" in notes[0] and notes[0].endswith("local text encoder")
    notes.clear()
    Engine.load("klein-4b", LoadOptions(remote_encoder="http://127.0.0.1:9/predict", hub_cache=si.cache,
                                        notify=notes.append))
    assert len(notes) == 1 and "cannot be reached" in notes[0]
    with pytest.raises(InvalidRequest, match="exclude each other"):
        Engine.load("dev", LoadOptions(local_encoder=True, remote_encoder=encoder_server.url()))
    with pytest.raises(InvalidRequest, match="takes an http"):
        LoadOptions(remote_encoder="localhost:2223/predict").validate()


def test_encoder_server_checks_its_input_with_the_main_servers_defaults(encoder_server):
    import urllib.error
    import urllib.request

    def call(path="/predict", body=None, key="s3cret", content_type="application/json", **headers):
        headers = {"Authorization": f"Bearer {key}", **headers}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(encoder_server.url(path), data=body, headers=headers,
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    for status, body in (call(body=b'{"prompt": "x"}', key="wrong"), call("/health", key="")):
        assert status == 401 and json.loads(body)["success"] is False
    status, body = call(body=b"not json")
    assert status == 400 and json.loads(body) == {"success": False, "error": 'send JSON: {"prompt": "..."}'}
    assert call(body=b'{"prompt": "x"}', content_type=None)[0] == 415
    assert call(body=json.dumps({"prompt": "x" * 5000}).encode())[0] == 400
    assert call(body=json.dumps({"prompt": 3}).encode())[0] == 400
    status, body = call(body=json.dumps({"prompt": "x" * 70_000}).encode())
    assert status == 413 and "too large" in json.loads(body)["error"]
    status, body = call("/health", Host="attacker.example")  # DNS rebinding: loopback names only
    assert status == 403 and "localhost" in json.loads(body)["error"]
    assert call(body=b'{"prompt": "x"}', Origin="https://attacker.example")[0] == 403
    status, body = call("/health")
    assert status == 200 and json.loads(body)["model"] == "FLUX.2-dev (full)"


def test_a_bare_encoder_address_means_its_predict_route():
    assert RemoteTextEncoder("http://gpu-box:2223", embed_dim=D).url == "http://gpu-box:2223/predict"
    assert RemoteTextEncoder("http://gpu-box:2223/", embed_dim=D).url == "http://gpu-box:2223/predict"
    assert RemoteTextEncoder("https://h.example/v2/encode", embed_dim=D).url == "https://h.example/v2/encode"


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
    from flux2cli.api import load_options
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    monkeypatch.setenv("FLUX2_ENCODER_URL", endpoint.url("/paused"))
    engine = Engine.load("dev", load_options())
    assert engine.describe()["encoder"] == "local encoder"
    assert engine.load_notices == (f"the remote encoder at http://127.0.0.1:{endpoint.port} is unavailable "
                                   "(503: space is paused): prompts are encoded by the local text encoder",)
