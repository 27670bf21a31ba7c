"""FLUX.2 [klein] base (undistilled, CFG) and klein 9B-KV, and negative prompts.

The registry entries load stand-ins laid out as their hub repos (tests/standins.py) through
the real offline hub path; negative prompts reach the pipeline's CFG on the base stand-in
and are refused, in one line naming the field, by models that would ignore them.
"""

from __future__ import annotations

import numpy as np
import pytest

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.fields import FIELD
from flux2cli.pipeline.registry import MODELS, get_model
from flux2cli.pipeline.request import GenerationRequest
from images import png_bytes
from standins import run_flux2

PROMPT = "a red circle on a blue background"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _request(model: str, **values):
    values.setdefault("width", 64)
    values.setdefault("height", 64)
    values.setdefault("steps", 3)
    values.setdefault("seed", 5)
    return GenerationRequest.create(PROMPT, model=model, **values)


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def base_engine(si, tmp_path_factory):
    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions

    return Engine.load("klein-base-4b", LoadOptions(hub_cache=si.cache))


# --------------------------------------------------------------------------- registry


def test_the_base_entries_run_cfg_and_the_kv_entry_its_own_pipeline():
    for name in ("klein-base-4b", "klein-base-9b"):
        spec = get_model(name)
        assert spec.cfg and not spec.distilled and spec.pipeline_class == "Flux2KleinPipeline"
        assert (spec.default_steps, spec.default_guidance) == (50, 4.0)
    kv = get_model("klein-9b-kv")
    assert kv.pipeline_class == "Flux2KleinKVPipeline" and kv.distilled and not kv.cfg
    assert [spec.name for spec in MODELS if spec.cfg] == ["klein-base-4b", "klein-base-9b"]


@pytest.mark.parametrize("name,pipeline", [("klein-base-4b", "Flux2KleinPipeline"),
                                           ("klein-base-9b", "Flux2KleinPipeline"),
                                           ("klein-9b-kv", "Flux2KleinKVPipeline")])
def test_each_new_entry_loads_its_stand_in_from_the_hub_cache_and_generates(si, monkeypatch, name, pipeline):
    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions

    si.use_cache(monkeypatch)
    engine = Engine.load(name, LoadOptions(hub_cache=si.cache))
    assert type(engine.pipe).__name__ == pipeline
    [result] = engine.generate(_request(name))
    assert result.image.size == (64, 64)
    assert np.asarray(result.image).std() > 1  # an image, not a flat fill


def test_kv_generates_with_a_reference_image(si, monkeypatch):
    import io

    from PIL import Image

    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions
    from flux2cli.pipeline.request import ReferenceImage

    si.use_cache(monkeypatch)
    engine = Engine.load("klein-9b-kv", LoadOptions(hub_cache=si.cache))
    reference = ReferenceImage("upload", Image.open(io.BytesIO(png_bytes((64, 64)))).convert("RGB"))
    plain = engine.generate(_request("klein-9b-kv"))[0].image
    with_ref = engine.generate(_request("klein-9b-kv", reference_images=[reference], strength=1.0))[0].image
    assert with_ref.size == (64, 64)
    # the random stand-in barely looks at the reference, but the cached K/V do reach the image
    assert not np.array_equal(_pixels(plain), _pixels(with_ref))


# --------------------------------------------------------------------------- negative prompts


def test_a_negative_prompt_changes_the_image_and_is_encoded_once(base_engine, monkeypatch):
    plain = base_engine.generate(_request("klein-base-4b"))[0].image
    negative = base_engine.generate(_request("klein-base-4b", negative_prompt="a green square"))[0]
    assert not np.array_equal(_pixels(plain), _pixels(negative.image))
    # CFG is neg + g * (pos - neg): with the prompt as its own negative it is the conditional
    # prediction alone, which is what guidance 1 (no CFG) computes. So the negative embeddings
    # are exactly what the second pass used.
    no_cfg = base_engine.generate(_request("klein-base-4b", guidance=1.0))[0].image
    itself = base_engine.generate(_request("klein-base-4b", negative_prompt=PROMPT))[0].image
    assert np.array_equal(_pixels(no_cfg), _pixels(itself))
    assert not np.array_equal(_pixels(no_cfg), _pixels(plain))  # "" as the negative: CFG did act

    calls = []
    real = base_engine.encoder.encoder.encode
    monkeypatch.setattr(base_engine.encoder.encoder, "encode", lambda key: calls.append(key.prompt) or real(key))
    repeat = base_engine.generate(_request("klein-base-4b", negative_prompt="a green square"))[0]
    assert calls == [] and repeat.timings["encoding"] == 0.0  # both embeddings came from the cache
    assert np.array_equal(_pixels(repeat.image), _pixels(negative.image))


def test_the_negative_prompt_is_stored_and_replayed(base_engine, tmp_path):
    from flux2cli.pipeline.metadata import plan_replay, read_parameters, replay_command

    [saved] = base_engine.generate_and_save(_request("klein-base-4b", negative_prompt="blurry"), tmp_path)
    stored = read_parameters(saved.path)
    assert stored.settings["negative_prompt"] == "blurry"
    assert plan_replay(stored, {}).settings["negative_prompt"] == "blurry"
    assert "--negative-prompt blurry" in replay_command(stored)
    # replayed on a distilled model the stored negative prompt is dropped, not refused
    assert "negative_prompt" not in plan_replay(stored, {}, model="tiny").settings


@pytest.mark.parametrize("model,kind", [("tiny", "step-distilled"), ("klein-4b", "step-distilled"),
                                        ("klein-9b-kv", "step-distilled"), ("dev", "guidance-distilled")])
def test_models_that_would_ignore_it_refuse_a_negative_prompt_in_one_line(model, kind):
    with pytest.raises(InvalidRequest) as refused:
        GenerationRequest.create(PROMPT, model=model, negative_prompt="blurry")
    message = str(refused.value)
    assert refused.value.field == "negative_prompt" and "\n" not in message
    assert kind in message and "klein-base-4b" in message


@pytest.mark.parametrize("value,words", [("", "empty"), ("  ", "empty"), ("a\x00b", "control"), (3, "text")])
def test_a_bad_negative_prompt_is_refused_like_a_prompt(value, words):
    with pytest.raises(InvalidRequest, match=words) as refused:
        GenerationRequest.create(PROMPT, model="klein-base-4b", negative_prompt=value)
    assert refused.value.field == "negative_prompt"


def test_guidance_1_says_the_negative_prompt_is_unused():
    request = GenerationRequest.create(PROMPT, model="klein-base-4b", negative_prompt="blurry", guidance=1.0)
    assert any("negative prompt is ignored" in notice for notice in request.notices)


def test_the_schema_allows_it_only_where_the_model_runs_cfg():
    assert FIELD["negative_prompt"].schema(get_model("tiny"))["type"] == "null"
    base = FIELD["negative_prompt"].schema(get_model("klein-base-4b"))
    assert {"type": "null"} in base["anyOf"] and any(b.get("type") == "string" for b in base["anyOf"])


def test_the_cli_refuses_it_on_a_distilled_model_with_exit_2(tmp_path):
    run = run_flux2("generate", PROMPT, "--model", "tiny", "--negative-prompt", "blurry", "-o", str(tmp_path))
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "negative_prompt" in run.stderr
    assert not list(tmp_path.iterdir())


def test_repl_negative_sets_and_clears_it_and_is_refused_on_tiny():
    from flux2cli.repl.actions import Generate
    from flux2cli.repl.session import ReplSession

    session = ReplSession(get_model("klein-base-4b"), steps=2)
    assert "blurry" in session.handle("/negative blurry").text
    action = session.handle("a cat")
    assert isinstance(action, Generate) and action.request.negative_prompt == "blurry"
    assert "no negative prompt" in session.handle("/negative off").text
    assert session.handle("a cat").request.negative_prompt is None

    tiny = ReplSession(get_model("tiny"))
    reply = tiny.handle("/negative blurry")
    assert reply.kind == "error" and "step-distilled" in reply.text
    assert tiny.settings.negative_prompt is None
