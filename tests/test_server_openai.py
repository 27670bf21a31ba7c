"""OpenAI's Images API on `flux2 serve`, driven by the official `openai` client over real HTTP.

The module's server runs the real embedded `tiny` model (square 1 MP = 64x64); queue and
disconnect behaviour use the fake engine, whose generations can be held mid-run.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading

import pytest

from flux2cli.server.config import ServerConfig
from images import png_bytes
from server_fixtures import TINY_PROMPT, FakeEngine, LiveServer

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAST = {"steps": 2}  # flux2cli's own fields travel in the client's extra_body


def _client(server: LiveServer, key: str = "any-key-works-without-one") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(server):
    with _client(server) as client:
        yield client


def _image(b64: str):
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def _openai_error(reply) -> dict:
    """The reply is OpenAI's error shape and leaks nothing; returns its ``error`` object."""
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert "Traceback" not in reply.text and "/tmp/" not in reply.text and "/work/" not in reply.text
    return body["error"]


# -- generations ---------------------------------------------------------------------


def test_b64_json_is_a_saved_png_of_the_requested_size(server, client):
    result = client.images.generate(model="tiny", prompt=TINY_PROMPT, size="64x48", extra_body={**FAST, "seed": 3})
    assert isinstance(result.created, int) and result.output_format == "png" and result.size == "64x48"
    [item] = result.data
    assert item.url is None and item.revised_prompt == TINY_PROMPT
    image = _image(item.b64_json)
    assert image.format == "PNG" and image.size == (64, 48)
    metadata = json.loads(image.text["flux2"])
    assert metadata["seed"] == 3 and metadata["steps"] == 2 and metadata["model"] == "tiny"
    png = base64.b64decode(item.b64_json)
    saved = [path for path in server.config.output_dir.glob("*.png") if path.read_bytes() == png]
    assert len(saved) == 1 and saved[0].with_suffix(".prompt").read_text().count("# Seed: 3") == 1


def test_n_makes_a_batch_with_consecutive_seeds(client):
    result = client.images.generate(prompt=TINY_PROMPT, n=2, extra_body={**FAST, "seed": 40})
    assert len(result.data) == 2
    seeds = [json.loads(_image(item.b64_json).text["flux2"])["seed"] for item in result.data]
    assert seeds == [40, 41]


def test_auto_size_is_the_models_square_1mp(client):
    for size in ("auto", None):
        extra = {"size": size} if size else {}
        result = client.images.generate(prompt=TINY_PROMPT, extra_body=FAST, **extra)
        assert _image(result.data[0].b64_json).size == (64, 64) and result.size == "64x64"


def test_url_points_at_this_servers_image_route(server, client):
    result = client.images.generate(prompt=TINY_PROMPT, response_format="url", extra_body=FAST)
    url = result.data[0].url
    assert result.data[0].b64_json is None
    assert url.startswith(f"{server.url}/images/flux2_") and url.endswith(".png")
    reply = server.call("GET", url[len(server.url):])
    assert reply.status == 200 and reply.headers["Content-Type"] == "image/png"
    assert _image(base64.b64encode(reply.body)).size == (64, 64)


@pytest.mark.parametrize(("fmt", "pil"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_formats(client, fmt, pil):
    result = client.images.generate(prompt=TINY_PROMPT, output_format=fmt, output_compression=80, extra_body=FAST)
    image = _image(result.data[0].b64_json)
    assert image.format == pil and image.size == (64, 64) and result.output_format == fmt


def test_model_names_the_loaded_model_or_an_openai_default(client):
    for name in ("tiny", "FLUX2-TINY", "gpt-image-1", "dall-e-3"):
        assert len(client.images.generate(model=name, prompt=TINY_PROMPT, extra_body=FAST).data) == 1
    with pytest.raises(openai.NotFoundError) as other:
        client.images.generate(model="klein-4b", prompt=TINY_PROMPT)
    assert "not loaded" in other.value.message and "--model klein-4b" in other.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.generate(model="stable-diffusion-xl", prompt=TINY_PROMPT)
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"


@pytest.mark.parametrize(("size", "words"), [
    ("100x100", "must be a multiple of 16"),
    ("1024x1024", "does not suit flux2-tiny"),
    ("1024x1024", "'auto' is 64x64"),
    ("big", "WIDTHxHEIGHT"),
])
def test_a_bad_size_is_a_bad_request_naming_the_problem(client, size, words):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(prompt=TINY_PROMPT, size=size)
    assert error.value.status_code == 400 and error.value.param == "size"
    assert words in error.value.message, error.value.message


@pytest.mark.parametrize(("kwargs", "param", "words"), [
    ({"n": 5}, "n", "n must be between 1 and 4"),
    ({"n": 0}, "n", "n must be between 1 and 4"),
    ({"response_format": "url", "output_format": "jpeg"}, "output_format", "b64_json"),
    ({"output_format": "gif"}, "output_format", "png, jpeg, webp"),
    ({"output_compression": 101}, "output_compression", "0 to 100"),
    ({"background": "transparent"}, "background", "opaque"),
    ({"extra_body": {"steps": 0}}, "steps", "steps must be between"),
    ({"extra_body": {"seed": -1}}, "seed", "seed must be between"),
    ({"extra_body": {"strength": 0.5}}, "strength", "Unrecognized request argument"),  # edits only
    ({"extra_body": {"mask_blur": 4}}, "mask_blur", "Unrecognized request argument"),
])
def test_other_invalid_values_are_bad_requests(client, kwargs, param, words):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(prompt=TINY_PROMPT, **kwargs)
    assert error.value.param == param and words in error.value.message, error.value.message


def test_streaming_is_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(prompt=TINY_PROMPT, stream=True)
    assert error.value.param == "stream"


# -- edits -----------------------------------------------------------------------------


def test_edit_uses_the_image_as_reference_and_keeps_its_shape(client):
    result = client.images.edit(image=("photo.png", png_bytes((96, 160), (10, 200, 30)), "image/png"), prompt=TINY_PROMPT,
                                extra_body={**FAST, "seed": 9, "strength": 0.5})
    image = _image(result.data[0].b64_json)
    assert image.size == (48, 80)  # a tall upload: tiny's portrait 1 MP
    metadata = json.loads(image.text["flux2"])
    assert metadata["reference_images"] == ["upload"] and metadata["strength"] == 0.5
    assert metadata["orientation"] == "portrait" and metadata["seed"] == 9


def test_edit_with_several_images_a_size_and_n(client):
    images = [("a.png", png_bytes((64, 64), (10, 200, 30)), "image/png"), ("b.png", png_bytes((80, 48), (200, 0, 0)), "image/png")]
    result = client.images.edit(image=images, prompt=TINY_PROMPT, size="80x48", n=2,
                                output_format="webp", extra_body=FAST)
    assert len(result.data) == 2 and result.size == "80x48"
    assert all(_image(item.b64_json).size == (80, 48) for item in result.data)


@pytest.mark.parametrize(("kwargs", "param", "words"), [
    ({"image": ("x.png", b"not an image", "image/png")}, "image", "is not a PNG, JPEG or WebP"),
    ({"image": ("x.png", png_bytes((96, 160), (10, 200, 30)), "image/png"), "mask": ("m.png", png_bytes((96, 160), (10, 200, 30)), "image/png")}, "mask",
     "mask has no transparency"),
    ({"image": [("x.png", png_bytes((96, 160), (10, 200, 30)), "image/png")] * 5}, "image", "at most 4 images"),
    ({"image": ("x.png", png_bytes((96, 160), (10, 200, 30)), "image/png"), "size": "70x70"}, "size", "must be a multiple of 16"),
])
def test_edit_refusals(client, kwargs, param, words):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.edit(prompt=TINY_PROMPT, **kwargs)
    assert error.value.param == param and words in error.value.message, error.value.message


def test_edits_take_a_form_and_generations_take_json(server):
    reply = server.call("POST", "/v1/images/edits", {"prompt": "x"})
    error = _openai_error(reply)
    assert reply.status == 415 and "multipart/form-data" in error["message"]
    reply = server.call("POST", "/v1/images/generations", raw=b"prompt=x",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 415 and _openai_error(reply)["code"] == "unsupported_media_type"
    boundary = "b0undary"
    form = f"--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--{boundary}--\r\n".encode()
    reply = server.call("POST", "/v1/images/edits", raw=form,
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status == 400 and _openai_error(reply)["param"] == "image"
    reply = server.call("POST", "/v1/images/edits", raw=b"garbage",
                        headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert reply.status == 400 and "multipart" in _openai_error(reply)["message"]


# -- models, errors, auth ----------------------------------------------------------------


def test_models_lists_the_loaded_model(client):
    listed = client.models.list()
    assert [entry.id for entry in listed.data] == ["tiny"]
    assert listed.data[0].object == "model" and isinstance(listed.data[0].created, int)
    assert client.models.retrieve("flux2-tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("dall-e-3")


def test_errors_have_openai_shape_everywhere_under_v1(server):
    cases = [
        (server.call("GET", "/v1/nothing"), 404),
        (server.call("DELETE", "/v1/models"), 405),
        (server.call("POST", "/v1/images/generations", raw=b"{", headers={"Content-Type": "application/json"}), 400),
        (server.call("POST", "/v1/images/generations", {"n": 1}), 400),
        (server.call("POST", "/v1/images/generations", {"prompt": "x"}, headers={"Origin": "http://evil.x"}), 403),
        (server.call("GET", "/v1/models", headers={"Host": "evil.example"}), 403),
    ]
    for reply, status in cases:
        assert reply.status == status, (reply.status, reply.body[:200])
        error = _openai_error(reply)
        assert error["type"] == "invalid_request_error"
    assert _openai_error(cases[3][0])["code"] == "missing_required_parameter"
    assert server.call("GET", "/status").json()["generating"] is False  # other routes keep the spec's shape
    assert server.call("GET", "/nope").json()["success"] is False


def test_the_api_key_is_the_bearer_token(tiny_engine, tmp_path):
    key = "s3cret-key-for-openai-tests"
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path, api_key=key)) as keyed:
        with _client(keyed, "wrong") as wrong, pytest.raises(openai.AuthenticationError) as error:
            wrong.models.list()
        assert error.value.status_code == 401 and error.value.code == "invalid_api_key"
        assert key not in str(error.value.body)
        with _client(keyed, key) as right:
            assert right.models.list().data[0].id == "tiny"
            result = right.images.generate(prompt=TINY_PROMPT, response_format="url", extra_body={"steps": 1})
        path = result.data[0].url[len(keyed.url):]
        assert keyed.call("GET", path).status == 401  # fetching the URL needs the key too
        assert keyed.call("GET", path, headers={"Authorization": f"Bearer {key}"}).status == 200


# -- the queue: waits in line, 503 only when it is full ---------------------------------


def test_a_call_waits_in_the_queue_and_a_full_queue_answers_503(tmp_path):
    engine = FakeEngine(hold=True)
    with LiveServer(engine, ServerConfig(output_dir=tmp_path, queue_size=1)) as live, _client(live) as client:
        running = live.call("POST", "/jobs", {"prompt": "first", "steps": 2})
        assert running.status == 202
        live.wait_until(lambda: live.worker.running is not None, what="the held job to run")
        results = []
        waiting = threading.Thread(target=lambda: results.append(
            client.images.generate(prompt="second", extra_body={"steps": 2})))
        waiting.start()
        live.wait_until(lambda: live.worker.status()["queued"] == 1, what="the OpenAI call to queue")
        with pytest.raises(openai.InternalServerError) as busy:
            client.images.generate(prompt="third")
        assert busy.value.status_code == 503 and busy.value.code == "server_busy"
        assert "queue is full" in busy.value.message
        assert int(busy.value.response.headers["Retry-After"]) >= 1
        engine.release.set()
        waiting.join(60)
        assert len(results) == 1 and len(results[0].data) == 1
        assert [request.prompt for request in engine.requests] == ["first", "second"]


def test_a_client_that_disconnects_cancels_its_generation(tmp_path):
    engine = FakeEngine(hold=True)
    with LiveServer(engine, ServerConfig(output_dir=tmp_path)) as live:
        body = json.dumps({"prompt": "gone", "steps": 5}).encode()
        sock = socket.create_connection(("127.0.0.1", live.port))
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        live.wait_until(lambda: live.worker.running is not None, what="the generation to start")
        sock.close()
        live.wait_until(lambda: live.worker.running is None, timeout=30, what="the generation to stop")
        assert live.worker.history[-1].state == "cancelled"
        assert not list(tmp_path.glob("*.png"))


def test_openapi_documents_the_openai_routes(server):
    document = server.call("GET", "/openapi.json").json()
    paths = document["paths"]
    assert set(paths["/v1/images/generations"]) == {"post"} and set(paths["/v1/models"]) == {"get"}
    assert "multipart/form-data" in paths["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert "application/json" in paths["/v1/images/generations"]["post"]["requestBody"]["content"]
    assert "/v1/models/{model}" in paths


def test_uploads_over_the_cap_get_413_even_without_content_length(tmp_path):
    with LiveServer(FakeEngine(), ServerConfig(output_dir=tmp_path, max_body_bytes=64 * 1024)) as small, \
            _client(small) as client:
        big = ("big.png", b"\x89PNG" + b"\0" * 100_000, "image/png")
        with pytest.raises(openai.APIStatusError) as error:
            client.images.edit(image=big, prompt="x")
        assert error.value.status_code == 413 and error.value.code == "request_too_large"
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode()
        conn = small.connection()  # chunked: only the form reader can count the bytes
        conn.putrequest("POST", "/v1/images/edits")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for piece in [head] + [b"\0" * 8192] * 12:
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == "request_too_large"
        conn.close()


def test_a_failed_generation_is_a_500_without_details(tmp_path):
    engine = FakeEngine(fail=RuntimeError("CUDA failed in /home/user/secret/model.py"))
    with LiveServer(engine, ServerConfig(output_dir=tmp_path)) as live, _client(live) as client:
        with pytest.raises(openai.InternalServerError) as error:
            client.images.generate(prompt="x", extra_body={"steps": 1})
        assert error.value.status_code == 500 and error.value.type == "server_error"
        assert "secret" not in str(error.value.body) and "generation failed" in error.value.message
