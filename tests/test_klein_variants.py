"""FLUX.2 [klein] base (undistilled, CFG) and klein 9B-KV.

The registry entries load stand-ins laid out as their hub repos (tests/standins.py) through
the real offline hub path.
"""

from __future__ import annotations

import numpy as np
import pytest

from flux2cli.pipeline.registry import MODELS, get_model
from flux2cli.pipeline.request import GenerationRequest
from images import png_bytes

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
