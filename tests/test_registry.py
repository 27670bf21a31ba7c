import pytest

from flux2cli.errors import UnknownModel
from flux2cli.pipeline.registry import DEFAULT_MODEL, MODELS, get_model, resolve_model
from flux2cli.settings import default_model


def test_expected_entries_exist():
    names = {spec.name for spec in MODELS}
    assert names == {"dev-bnb4", "dev", "dev-gguf-bf16", "dev-gguf-q8", "dev-gguf-q4",
                     "klein-4b", "klein-9b", "klein-base-4b", "klein-base-9b", "klein-9b-kv", "tiny"}


def test_spec_default_is_4bit_dev():
    assert DEFAULT_MODEL == "dev-bnb4"
    spec = resolve_model(None)
    assert spec.repo == "diffusers/FLUX.2-dev-bnb-4bit" and spec.pipeline_class == "Flux2Pipeline"
    assert (spec.default_steps, spec.step_range) == (25, (10, 50))


def test_the_registry_reads_no_settings_the_front_ends_pass_the_default(monkeypatch):
    monkeypatch.setenv("FLUX2_MODEL", "tiny")
    assert resolve_model(None).name == DEFAULT_MODEL
    assert resolve_model(None, default=default_model()).name == "tiny"
    assert resolve_model("klein-4b", default=default_model()).name == "klein-4b"  # a flag beats the variable
    assert resolve_model(None, gguf="q8", default=default_model()).name == "dev-gguf-q8"  # so does a shorthand


def test_shorthands():
    assert resolve_model(None, full_model=True).name == "dev"
    assert resolve_model(None, gguf="Q8").name == "dev-gguf-q8"
    assert resolve_model("dev", full_model=True).name == "dev"


@pytest.mark.parametrize("kwargs,message", [
    ({"full_model": True, "gguf": "q8"}, "exclude"),
    ({"gguf": "q5"}, "bf16, q8, q4"),
    ({"model": "tiny", "full_model": True}, "contradicts")])
def test_contradictions_are_refused(kwargs, message):
    with pytest.raises(UnknownModel, match=message):
        resolve_model(**kwargs)


def test_aliases_and_unknown_names():
    assert get_model("KLEIN").name == "klein-4b"
    with pytest.raises(UnknownModel, match="choose one of: dev-bnb4"):
        get_model("flux3")


def test_klein_models_are_distilled_and_dev_is_not():
    for spec in MODELS:
        assert spec.distilled == (spec.family in ("klein", "tiny") and not spec.cfg)
        assert spec.cfg == spec.name.startswith("klein-base")
        expected = "Flux2Pipeline" if spec.family == "dev" else (
            "Flux2KleinKVPipeline" if spec.name.endswith("-kv") else "Flux2KleinPipeline")
        assert spec.pipeline_class == expected
        lo, hi = spec.step_range
        assert lo <= spec.default_steps <= hi


def test_tiny_ships_inside_the_package():
    spec = get_model("tiny")
    assert (spec.local_dir / "model_index.json").is_file()
    assert spec.max_sequence_length == 32
