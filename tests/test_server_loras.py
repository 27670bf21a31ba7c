"""LoRAs on `flux2 serve`, over real HTTP: GET /loras, the `loras` field on the spec's routes and
as OpenAI's extra field, names only (never paths), and swaps between requests without a reload."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

import lora_fixtures as lf
from flux2cli.lora.files import LoraCatalog
from flux2cli.server.config import ServerConfig
from server_fixtures import LiveServer, assert_error

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

PROMPT = "a red circle on a blue background"
BODY = {"prompt": PROMPT, "seed": 5, "steps": 2, "orientation": "square"}


@pytest.fixture(scope="module")
def engine():
    from flux2cli.pipeline.engine import Engine

    return Engine.load("tiny")  # its own: the server loads and swaps adapters on it


@pytest.fixture(scope="module")
def live(engine, tmp_path_factory):
    catalog = LoraCatalog(lf.warm_and_cold(engine.pipe.transformer, tmp_path_factory.mktemp("loras")))
    # The operator's default (--lora warm:0.5): native requests that name none get it.
    engine.loras.configure(catalog, defaults=catalog.add_refs(["warm:0.5"]))
    with LiveServer(engine, ServerConfig(output_dir=tmp_path_factory.mktemp("out"))) as server:
        yield server
    engine.loras.unload_all()


def _generated(server, body):
    reply = server.call("POST", "/generate", body)
    assert reply.status == 200, reply.body[:300]
    image = reply.json()["images"][0]
    return image, _pixels(server, image["filename"])


def _pixels(server, filename):
    reply = server.call("GET", f"/images/{filename}")
    assert reply.status == 200
    return np.asarray(Image.open(io.BytesIO(reply.body)).convert("RGB")).astype(int)


def test_get_loras_lists_the_offered_files_with_family_and_rank(live):
    reply = live.call("GET", "/loras")
    assert reply.status == 200
    entries = {entry["name"]: entry for entry in reply.json()["loras"]}
    assert {"warm", "cold"} <= set(entries)
    assert (entries["warm"]["rank"], entries["cold"]["rank"]) == (4, 2)
    assert reply.json()["defaults"] == [{"name": "warm", "scale": 0.5}]


def test_requests_swap_loras_without_reloading_and_none_is_the_base(live, engine):
    pipe = engine.pipe
    _, default = _generated(live, BODY)
    _, base = _generated(live, {**BODY, "loras": []})
    _, warm_half = _generated(live, {**BODY, "loras": [{"name": "warm", "scale": 0.5}]})
    _, cold = _generated(live, {**BODY, "loras": [{"name": "cold", "scale": 1.0}]})
    _, base_again = _generated(live, {**BODY, "loras": []})
    assert engine.pipe is pipe  # swapped in place: the model was never loaded again
    assert (default == warm_half).all()  # naming none = the server's --lora set
    assert not (base == warm_half).all() and not (base == cold).all() and not (warm_half == cold).all()
    assert (base == base_again).all()  # unloading gives the base back exactly


@pytest.mark.parametrize("name", ["../warm", "/etc/passwd", "warm.safetensors", "C:\\loras\\warm", "nope"])
def test_only_offered_names_are_taken_never_a_path(live, name):
    message = assert_error(live.call("POST", "/generate", {**BODY, "loras": [{"name": name}]}), 400)
    assert "loras" in message
    assert live.call("GET", "/status").status == 200  # and the server keeps serving


def test_openai_routes_apply_loras_only_when_named_in_the_extra_field(live):
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)
    common = {"prompt": PROMPT, "size": "64x64", "response_format": "b64_json"}

    def pixels(**extra):
        result = client.images.generate(**common, extra_body={"seed": 5, "steps": 2, **extra})
        png = base64.b64decode(result.data[0].b64_json)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)

    _, base = _generated(live, {**BODY, "loras": []})
    _, cold = _generated(live, {**BODY, "loras": [{"name": "cold"}]})
    assert (pixels() == base).all()  # not the server's --lora default: an OpenAI client did not ask for it
    assert (pixels(loras=[{"name": "cold"}]) == cold).all()
    with pytest.raises(openai.BadRequestError) as error:
        pixels(loras=[{"name": "../cold"}])
    assert error.value.body["param"] == "loras"


def test_openai_edits_take_loras_as_json_text(live):
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)
    reference = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 70, 220)).save(reference, "PNG")

    def edit(loras):
        reference.seek(0)
        return client.images.edit(image=("ref.png", reference, "image/png"), prompt=PROMPT, size="64x64",
                                  extra_body={"seed": 5, "steps": 2, "loras": loras})

    plain = base64.b64decode(edit("[]").data[0].b64_json)
    cold = base64.b64decode(edit('[{"name": "cold"}]').data[0].b64_json)
    assert plain != cold
    with pytest.raises(openai.BadRequestError) as error:
        edit("cold")
    assert error.value.body["param"] == "loras" and "JSON text" in error.value.body["message"]
