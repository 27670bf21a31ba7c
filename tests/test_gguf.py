"""GGUF transformers: every type gguf-py writes, in every key layout, through the real loader.

Files are written with the ``gguf`` package from the [dev] stand-in's transformer (F16,
BF16, Q8_0, Q4_0 x diffusers / BFL / ComfyUI keys) and loaded via ``--gguf PATH`` and,
through the hub cache, via ``--gguf q8``.
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from flux2cli.errors import InvalidRequest, ModelLoadError
from flux2cli.pipeline.gguf import describe_gguf_file, key_layout, load_gguf_transformer, strip_prefixes
from flux2cli.pipeline.registry import resolve_model
from flux2cli.pipeline.request import GenerationRequest

import standins
from standins import FixedEncoder, mean_abs_diff, run_flux2

PROMPT = "a red circle on a blue background"
SEED, STEPS, SIZE = 7, 10, 64  # [dev] allows 10-50 steps
# Relative error of the transformer's output against fp32, per stored type.
MAX_OUTPUT_ERROR = {"F16": 2e-3, "BF16": 1e-2, "Q8_0": 2e-2, "Q4_0": 0.15}
MAX_PIXEL_ERROR = {"F16": 1.0, "BF16": 2.0, "Q8_0": 3.0, "Q4_0": 12.0}  # mean |diff| in 0-255 levels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dev_reference(si, tmp_path_factory):
    """The full-precision [dev] stand-in: engine, prompt embeddings and the reference image."""
    import os

    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions

    old = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HUB_CACHE=str(si.cache), HF_HUB_OFFLINE="1")
    try:
        engine = Engine.load("dev", LoadOptions(local_encoder=True, hub_cache=si.cache))
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    request = GenerationRequest.create(PROMPT, model="dev", steps=STEPS, seed=SEED, width=SIZE, height=SIZE)
    image = engine.generate(request)[0].image
    embeds, _ = engine.encoder.encode(engine.embedding_key(PROMPT))
    return engine, embeds, image


def _forward(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 16, generator=generator)
    txt = torch.randn(1, 8, standins.JOINT_ATTENTION_DIM, generator=generator)
    img_ids = torch.zeros(1, 16, 4)
    img_ids[0, :, 1], img_ids[0, :, 2] = torch.arange(16) // 4, torch.arange(16) % 4
    txt_ids = torch.zeros(1, 8, 4)
    txt_ids[0, :, 3] = torch.arange(8)
    with torch.inference_mode():
        return model(hidden_states=x, encoder_hidden_states=txt, timestep=torch.tensor([0.5]),
                     guidance=torch.tensor([4.0]), img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]


def test_key_layouts_are_recognised_and_comfy_prefix_stripped():
    assert key_layout(["transformer_blocks.0.attn.to_q.weight"]) == "diffusers"
    assert key_layout(["double_blocks.0.img_attn.qkv.weight"]) == "bfl"
    assert key_layout(["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"]) == "comfy"
    assert strip_prefixes({"model.diffusion_model.img_in.weight": 1, "img_in.bias": 2}) == {
        "img_in.weight": 1, "img_in.bias": 2}


def test_every_type_in_every_layout_matches_the_full_precision_transformer(si):
    from diffusers import Flux2Transformer2DModel

    reference = _forward(Flux2Transformer2DModel.from_pretrained(si.dev, subfolder="transformer"))
    for qtype in standins.GGUF_TYPES:
        outputs = []
        for layout in standins.KEY_LAYOUTS:
            path = si.gguf(qtype, layout)
            info = describe_gguf_file(path)
            assert (info.quant_type, info.layout) == (qtype, layout)
            outputs.append(_forward(load_gguf_transformer(path, si.dev, torch.float32)))
        error = float((outputs[0] - reference).norm() / reference.norm())
        assert error < MAX_OUTPUT_ERROR[qtype], (qtype, error)
        # The three layouts hold the same numbers: converted keys land on the same weights.
        assert all(torch.equal(outputs[0], other) for other in outputs[1:]), qtype


def test_a_local_file_names_the_model_by_what_it_holds(si):
    q8 = resolve_model(None, gguf=str(si.gguf("Q8_0", "comfy")))
    assert (q8.name, q8.display_name, q8.pipeline_class) == ("dev-gguf-q8", "FLUX.2-dev GGUF Q8", "Flux2Pipeline")
    assert q8.gguf.is_local and q8.gguf.filename == str(si.gguf("Q8_0", "comfy").resolve())
    assert resolve_model(None, gguf=str(si.gguf("Q4_0", "bfl"))).display_name == "FLUX.2-dev GGUF Q4"
    assert resolve_model(None, gguf=str(si.gguf("BF16", "diffusers"))).name == "dev-gguf-bf16"
    # Another pipeline around the file: --model klein-4b --gguf PATH.
    klein = resolve_model("klein-4b", gguf=str(si.gguf("F16")))
    assert klein.name == "klein-4b" and klein.display_name == "FLUX.2-klein-4B GGUF F16"


def test_bad_gguf_paths_fail_with_one_clear_line(tmp_path):
    with pytest.raises(InvalidRequest, match="no GGUF file at"):
        resolve_model(None, gguf=str(tmp_path / "missing.gguf"))
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(InvalidRequest, match="is not a GGUF file"):
        resolve_model(None, gguf=str(text))


def test_a_file_of_another_model_is_refused(si, tmp_path):
    state = {k: v for k, v in standins.transformer_state(si.dev).items() if not k.startswith("single_")}
    partial = standins.write_gguf(state, tmp_path / "other.gguf", "Q8_0")
    with pytest.raises(ModelLoadError, match="does not hold a transformer matching"):
        load_gguf_transformer(partial, si.dev, torch.float32)


@pytest.mark.parametrize("qtype,layout", [("F16", "diffusers"), ("BF16", "bfl"), ("Q8_0", "comfy"),
                                          ("Q4_0", "diffusers")])
def test_gguf_path_generates_close_to_full_precision(si, dev_reference, monkeypatch, qtype, layout):
    from flux2cli.pipeline.engine import Engine
    from flux2cli.encoder.cache import CachedEncoder
    from flux2cli.pipeline.loading import LoadOptions

    si.use_cache(monkeypatch)
    _, embeds, reference = dev_reference
    spec = resolve_model(None, gguf=str(si.gguf(qtype, layout)))
    engine = Engine.load(spec, LoadOptions(local_encoder=True, hub_cache=si.cache))
    assert type(engine.pipe.transformer).__name__ == "Flux2Transformer2DModel"
    assert engine.describe()["model"] == f"FLUX.2-dev GGUF {qtype.split('_')[0]}"
    engine.encoder = CachedEncoder(FixedEncoder(embeds))  # the same embeddings as the reference
    request = GenerationRequest.create(PROMPT, model=spec, steps=STEPS, seed=SEED, width=SIZE, height=SIZE)
    image = engine.generate(request)[0].image
    assert image.size == (SIZE, SIZE)
    assert mean_abs_diff(image, reference) < MAX_PIXEL_ERROR[qtype]


def test_flux2_generate_gguf_q8_from_the_hub_cache(si, dev_reference, tmp_path, monkeypatch):
    si.use_cache(monkeypatch)
    result = run_flux2("generate", PROMPT, "--gguf", "q8", "--steps", str(STEPS), "--seed", str(SEED),
                       "--width", str(SIZE), "--height", str(SIZE), "--output-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    path = Path(json.loads(result.stdout)["images"][0]["path"])
    with Image.open(path) as png:
        assert png.text and "FLUX.2-dev GGUF Q8" in json.dumps(dict(png.text))
        assert mean_abs_diff(png, dev_reference[2]) < MAX_PIXEL_ERROR["Q8_0"]
