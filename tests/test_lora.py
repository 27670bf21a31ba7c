"""LoRAs end to end on the tiny model and on the bnb-4bit and GGUF stand-ins of the real layouts.

One random adapter is written in every shared layout (tests/lora_fixtures.py); each must load
and draw what the PEFT file draws (kohya bit for bit; the others, which stack q/k/v or go
through PEFT's LoKr layers, within one level of 255). Scale 0 is the base image exactly,
unloading gives the base weights back bit for bit, and files for other models are refused
in one line.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import lora_fixtures as lf
from flux2cli.errors import InvalidRequest
from flux2cli.lora import formats
from flux2cli.lora.files import LoraCatalog, parse_source
from flux2cli.pipeline.request import GenerationRequest

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def engine():
    from flux2cli.pipeline.engine import Engine

    return Engine.load("tiny")  # its own: these tests load and unload adapters


@pytest.fixture(scope="module")
def lora_dir(engine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    canonical = lf.random_lora(engine.pipe.transformer, rank=4, seed=1, std=0.1)
    for name, writer in lf.WRITERS.items():
        lf.write(writer(canonical), folder / f"{name}.safetensors")
    lf.write(lf.to_peft(lf.random_lora(engine.pipe.transformer, rank=2, seed=2, std=0.1)), folder / "other.safetensors")
    return folder


@pytest.fixture()
def loras(engine, lora_dir):
    engine.loras.configure(LoraCatalog(lora_dir))
    yield engine.loras
    engine.loras.unload_all()


def _pixels(engine, loras=(), seed=3):
    request = GenerationRequest.create(PROMPT, model="tiny", seed=seed, orientation="square", loras=list(loras))
    return np.asarray(engine.generate(request)[0].image).astype(int)


def _weights(transformer):
    return {k: v.detach().clone() for k, v in transformer.state_dict().items()}


def test_every_format_is_detected_from_its_keys(lora_dir):
    from flux2cli.lora.files import read_header, shapes

    expected = {"peft": "diffusers", "kohya": "kohya", "bfl": "bfl", "fal": "fal", "lokr": "diffusers-lokr",
                "lokr-full": "diffusers-lokr", "lycoris": "lycoris-lokr"}
    for name, fmt in expected.items():
        keys = shapes(read_header(lora_dir / f"{name}.safetensors"))
        assert formats.detect_format(list(keys)) == fmt, name
        assert formats.describe_keys(keys)["family"] == "flux2 tiny", name


def test_every_format_draws_what_the_peft_file_draws(engine, loras):
    base = _pixels(engine)
    peft = _pixels(engine, [{"name": "peft"}])
    assert np.abs(peft - base).mean() > 1  # the adapter does change the image
    assert np.array_equal(_pixels(engine, [{"name": "kohya"}]), peft)  # kohya: the same numbers exactly
    for name in ("bfl", "fal", "lokr", "lokr-full", "lycoris"):
        assert np.abs(_pixels(engine, [{"name": name}]) - peft).max() <= 1, name
    assert {item.kind for item in loras.loaded.values()} == {"lora", "lokr"}


def test_scale_zero_is_the_base_image_and_unloading_restores_the_weights_bit_for_bit(engine, loras):
    before = _weights(engine.pipe.transformer)
    base = _pixels(engine)
    assert np.array_equal(_pixels(engine, [{"name": "peft", "scale": 0.0}]), base)
    _pixels(engine, [{"name": "peft", "scale": 0.7}, {"name": "other", "scale": -0.5}, {"name": "lokr"}])
    loras.unload_all()
    after = _weights(engine.pipe.transformer)
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(_pixels(engine), base)


def test_stacked_scaled_and_swapped_without_reloading(engine, loras):
    one = _pixels(engine, [{"name": "peft", "scale": 0.5}])
    stacked = _pixels(engine, [{"name": "peft", "scale": 0.5}, {"name": "other", "scale": -1.0}])
    assert not np.array_equal(one, stacked)
    loaded = dict(loras.loaded)
    assert np.array_equal(_pixels(engine, [{"name": "peft", "scale": 0.5}]), one)  # back: same image
    assert loras.loaded == loaded  # swapping loaded nothing again


def test_fused_matches_unfused_and_the_base_comes_back(engine, loras):
    before = _weights(engine.pipe.transformer)
    unfused = _pixels(engine, [{"name": "peft", "scale": 0.8}])
    loras.fuse = True
    try:
        fused = _pixels(engine, [{"name": "peft", "scale": 0.8}])
        assert np.abs(fused - unfused).max() <= 1
        base = _pixels(engine)  # the fused weights are restored from their copy
    finally:
        loras.fuse = False
    loras.unload_all()
    after = _weights(engine.pipe.transformer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(base, _pixels(engine))


def _fake(path, tensors):
    return lf.write({k: torch.zeros(v) if isinstance(v, tuple) else v for k, v in tensors.items()}, path)


def test_files_for_other_models_are_refused_in_one_line(engine, loras, tmp_path):
    catalog = LoraCatalog(tmp_path)
    loras.configure(catalog)
    _fake(tmp_path / "sdxl.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320),
                                          "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)})
    _fake(tmp_path / "flux1.safetensors", {"diffusion_model.double_blocks.0.img_mod.lin.lora_A.weight": (4, 3072),
                                           "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": (4, 3072)})
    _fake(tmp_path / "klein4b.safetensors", {"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": (4, 3072),
                                             "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": (9216, 4)})
    _fake(tmp_path / "junk.safetensors", {"something.else": (2, 2)})
    catalog = LoraCatalog(tmp_path)
    loras.configure(catalog)
    messages = {}
    for name in ("sdxl", "flux1", "klein4b", "junk"):
        with pytest.raises(InvalidRequest) as refused:
            loras.load(name)
        messages[name] = str(refused.value)
        assert "\n" not in messages[name]
    assert "is a LoRA for SDXL, not for flux2-tiny" in messages["sdxl"]
    assert "is a LoRA for FLUX.1" in messages["flux1"]
    assert "is a LoRA for FLUX.2 [klein] 4B, not for flux2-tiny (hidden size 128)" in messages["klein4b"]
    assert "none of its 1 keys" in messages["junk"]
    assert not loras.loaded


def test_a_partial_match_needs_lora_partial(engine, loras, lora_dir, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(lora_dir / "peft.safetensors")
    tensors["transformer.not_a_layer.lora_A.weight"] = torch.zeros(4, 8)
    tensors["transformer.not_a_layer.lora_B.weight"] = torch.zeros(8, 4)
    lf.write(tensors, tmp_path / "partly.safetensors")
    loras.configure(LoraCatalog(tmp_path))
    with pytest.raises(InvalidRequest, match=r"partly.safetensors: 2 of its \d+ keys match no layer of flux2-tiny; "
                                             "--lora-partial loads the rest"):
        loras.load("partly")
    loras.partial = True
    try:
        loras.load("partly")
        assert "2 of its" in loras.notices[-1]
    finally:
        loras.partial = False


def test_sources_and_scales_are_parsed(lora_dir, tmp_path):
    assert parse_source("tiny-colours:0.8") == ("tiny-colours", 0.8)
    assert parse_source("a/b.safetensors:-1.5") == ("a/b.safetensors", -1.5)
    assert parse_source("owner/repo") == ("owner/repo", 1.0)
    catalog = LoraCatalog()
    refs = catalog.add_refs([f"{lora_dir / 'kohya.safetensors'}:0.5", str(lora_dir)  + "/peft.safetensors"])
    assert [(r.name, r.scale) for r in refs] == [("kohya", 0.5), ("peft", 1.0)]
    with pytest.raises(InvalidRequest, match="holds 8 .safetensors files"):
        catalog.add(str(lora_dir))
    with pytest.raises(InvalidRequest, match="not in the hub cache"):
        catalog.add("someone/some-lora")  # HF_HUB_OFFLINE=1 and an empty cache


def test_the_request_field_refuses_paths_and_bad_scales():
    from flux2cli.pipeline.fields import FIELD

    field = FIELD["loras"]
    for bad in ([{"name": "../etc/passwd"}], [{"name": "/tmp/x.safetensors"}], [{"name": "a\\b"}],
                [{"name": "x", "scale": 100}], [{"name": "x", "path": "y"}], "x", [{"name": ".hidden"}]):
        with pytest.raises(InvalidRequest):
            field.check(bad)
    assert [(r.name, r.scale) for r in field.check([{"name": "a", "scale": 0.5}, {"name": "a", "scale": 0.25}])] \
        == [("a", 0.75)]


def test_the_images_record_their_loras_and_replay_restores_them(engine, lora_dir, tmp_path):
    from flux2cli.lora.replay import restore
    from flux2cli.pipeline.metadata import read_parameters

    catalog = LoraCatalog(lora_dir)
    engine.loras.configure(catalog)
    try:
        request = GenerationRequest.create(PROMPT, model="tiny", seed=3, loras=[{"name": "peft", "scale": -0.5}])
        saved = engine.generate_and_save(request, tmp_path)[0]
    finally:
        engine.loras.unload_all()
    stored = read_parameters(saved.path)
    digest = catalog.get("peft").sha256
    assert stored.settings["loras"] == [{"name": "peft", "scale": -0.5, "sha256": digest}]
    from PIL import Image

    assert "<lora:peft:-0.5>" in Image.open(saved.path).text["parameters"].splitlines()[0]
    refs, notices = restore(stored.settings["loras"], catalog)
    assert [(r.name, r.scale) for r in refs] == [("peft", -0.5)] and not notices
    refs, notices = restore(stored.settings["loras"], LoraCatalog())
    assert refs == [] and "the image used LoRA 'peft' (scale -0.5), which is not available here" in notices[0]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("model", ["dev-bnb4", "dev-gguf-q8"])
def test_loras_load_stack_and_unload_on_quantized_stand_ins(si, model, tmp_path):
    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions

    old = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HUB_CACHE=str(si.cache), HF_HUB_OFFLINE="1")
    try:
        engine = Engine.load(model, LoadOptions(local_encoder=True, hub_cache=si.cache))
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    canonical = lf.random_lora(engine.pipe.transformer, rank=4, seed=5, std=0.3)
    lf.write(lf.to_peft(canonical), tmp_path / "peft.safetensors")
    lf.write(lf.to_kohya(canonical), tmp_path / "kohya.safetensors")
    lf.write(lf.to_lokr(canonical), tmp_path / "lokr.safetensors")
    engine.loras.configure(LoraCatalog(tmp_path), fuse=True)  # fusing is declined on quantized weights

    def pixels(loras=()):
        request = GenerationRequest.create(PROMPT, model=model, steps=10, seed=7, width=64, height=64,
                                           loras=list(loras))
        return np.asarray(engine.generate(request)[0].image).astype(int)

    pixels()  # bnb's CPU path repacks the 4-bit weights on their first use: compare after it
    before = _weights(engine.pipe.transformer)
    base = pixels()
    peft = pixels([{"name": "peft"}])
    assert np.abs(peft - base).mean() > 0.2
    assert np.array_equal(pixels([{"name": "kohya"}]), peft)
    with pytest.raises(InvalidRequest, match="is a LoKr adapter, which cannot act on quantized"):
        pixels([{"name": "lokr"}])  # PEFT's LoKr needs the unpacked weight's shape
    zero = pixels([{"name": "peft", "scale": 0.0}])
    if model == "dev-bnb4":
        # PEFT's wrapper of bnb's Linear4bit takes another CPU path through the 4-bit matmul than the bare
        # layer (measured: up to 4 levels of 255 on the stand-in); the weights themselves are untouched (below).
        assert np.abs(zero - base).max() <= 4
    else:
        assert np.array_equal(zero, base)
    assert any("stay unfused" in notice for notice in engine.loras.notices)
    engine.loras.unload_all()
    after = _weights(engine.pipe.transformer)
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(pixels(), base)  # unloaded: the base image again, bit for bit
