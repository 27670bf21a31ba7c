"""bitsandbytes NF4: the ``dev-bnb4`` entry (the spec's default model) on a CPU-only machine.

The stand-in is made the way ``diffusers/FLUX.2-dev-bnb-4bit`` was: the [dev] stand-in's
transformer and text encoder quantized to NF4 (bf16 compute) and saved with their
``quantization_config``; it is then loaded by our code from the hub cache. On a CPU-only
machine three things need care, all handled in ``loading.py``: diffusers' "No GPU found"
check, ``device_map="cpu"``, and bitsandbytes' CPU fast path, which crashes on layers whose
sizes it cannot pack (the stand-in has such layers on purpose).
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.memory import plan_offload
from flux2cli.pipeline.request import GenerationRequest

from standins import mean_abs_diff, run_flux2

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is an optional extra: pip install 'flux2cli[bnb]'")

PROMPT = "a red circle on a blue background"
SEED, STEPS, SIZE = 7, 10, 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engines(si):
    """The NF4 engine and the full-precision one it was quantized from."""
    import os

    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions

    old = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HUB_CACHE=str(si.cache), HF_HUB_OFFLINE="1")
    try:
        return (Engine.load("dev-bnb4", LoadOptions(hub_cache=si.cache)),
                Engine.load("dev", LoadOptions(local_encoder=True, hub_cache=si.cache)))
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _request(model):
    return GenerationRequest.create(PROMPT, model=model, steps=STEPS, seed=SEED, width=SIZE, height=SIZE)


def test_the_saved_folder_has_the_real_repos_quantization_config(si):
    transformer = json.loads((si.bnb / "transformer" / "config.json").read_text())["quantization_config"]
    encoder = json.loads((si.bnb / "text_encoder" / "config.json").read_text())["quantization_config"]
    for config in (transformer, encoder):
        assert config["quant_method"] == "bitsandbytes" and config["bnb_4bit_quant_type"] == "nf4"
        assert config["bnb_4bit_compute_dtype"] == "bfloat16"
    assert "quantization_config" not in json.loads((si.bnb / "vae" / "config.json").read_text())


def test_dev_bnb4_loads_nf4_weights_and_generates_close_to_full_precision(engines):
    nf4, full = engines
    assert nf4.describe()["model"] == "FLUX.2-dev-bnb-4bit"
    for component in (nf4.pipe.transformer, nf4.pipe.text_encoder):
        layers = [m for m in component.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and all(m.weight.quant_type == "nf4" for m in layers)
    image = nf4.generate(_request("dev-bnb4"))[0].image
    reference = full.generate(_request("dev"))[0].image
    assert image.size == (SIZE, SIZE)
    # NF4 of random tiny weights: close, not equal (real weights fare better).
    assert 0 < mean_abs_diff(image, reference) < 25


def test_layers_the_cpu_fast_path_cannot_pack_are_kept_off_it(si, monkeypatch):
    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions

    si.use_cache(monkeypatch)
    nf4 = Engine.load("dev-bnb4", LoadOptions(hub_cache=si.cache))  # its own copy: the fast path repacks what it touches
    layers = [m for m in nf4.pipe.transformer.modules() if isinstance(m, bnb.nn.Linear4bit)]
    unpackable = [m for m in layers if m.in_features % m.weight.blocksize or m.out_features % 32]
    assert unpackable, "the stand-in should have layers the fast path cannot pack"
    assert all(m.support_avx512bf16_for_cpu is False for m in unpackable)
    # Where the CPU has AVX512-BF16 the other layers use the fast path; force it here too,
    # so the test shows that the remaining layers are fine with it on any CPU.
    packable = [m for m in layers if m not in unpackable]
    try:
        for layer in packable:
            layer.support_avx512bf16_for_cpu = True
        assert nf4.generate(_request("dev-bnb4"))[0].image.size == (SIZE, SIZE)
        # And the guard is needed: an unpackable layer on the fast path fails.
        unpackable[0].support_avx512bf16_for_cpu = True
        with pytest.raises((RuntimeError, AssertionError)), torch.inference_mode():
            unpackable[0](torch.randn(1, unpackable[0].in_features))
    finally:
        del nf4


def test_sequential_offload_is_refused_for_bitsandbytes():
    with pytest.raises(InvalidRequest, match="does not work with bitsandbytes"):
        plan_offload("sequential", "cuda", 18.0, quantization="bnb-nf4")


def test_flux2_generate_default_model_is_dev_bnb4(si, engines, tmp_path, monkeypatch):
    si.use_cache(monkeypatch)
    result = run_flux2("generate", PROMPT, "--steps", str(STEPS), "--seed", str(SEED), "--width", str(SIZE),
                       "--height", str(SIZE), "--output-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    # No remote encoder offline: the local NF4 encoder, with a one-line notice.
    assert "HF_HUB_OFFLINE is set: prompts are encoded by the local text encoder" in result.stderr
    assert "Traceback" not in result.stderr
    path = Path(json.loads(result.stdout)["images"][0]["path"])
    expected = engines[0].generate(_request("dev-bnb4"))[0].image
    with Image.open(path) as png:
        assert "FLUX.2-dev-bnb-4bit" in json.dumps(dict(png.text))
        assert mean_abs_diff(png, expected) <= 1.0
