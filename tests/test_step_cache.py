"""Step caching (flux2cli/pipeline/step_cache.py) on the embedded tiny model at 28 steps.

Each mode runs fewer full transformer evaluations than steps and still draws an image close
to the uncached one; leaving the context removes every hook (the next image is bitwise the
uncached one again).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flux2cli.pipeline.step_cache import MODES, step_cache

STEPS = 28
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _draw(engine, seed: int = 3):
    embeds, _ = engine.encoder.encode(engine.embedding_key("a red circle on a blue background"))
    with torch.inference_mode():
        image = engine.pipe(prompt_embeds=embeds, height=64, width=64, num_inference_steps=STEPS, guidance_scale=1.0,
                            generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return np.asarray(image, dtype=np.float32)


def test_off_counts_every_step(tiny_engine):
    with step_cache(tiny_engine.pipe.transformer, "off") as counter:
        _draw(tiny_engine)
    assert counter.evaluations == STEPS


@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "off"])
def test_a_cache_skips_evaluations_draws_nearly_the_same_image_and_leaves_no_hook(tiny_engine, mode):
    plain = _draw(tiny_engine)
    with step_cache(tiny_engine.pipe.transformer, mode) as counter:
        cached = _draw(tiny_engine)
    assert 0 < counter.evaluations < STEPS
    assert not np.array_equal(cached, plain)  # work was really reused
    assert np.abs(cached - plain).mean() < 8  # out of 255: the same picture
    assert np.array_equal(_draw(tiny_engine), plain)  # the hooks are gone


def test_an_unknown_mode_is_refused(tiny_engine):
    with pytest.raises(ValueError, match="unknown cache mode"):
        with step_cache(tiny_engine.pipe.transformer, "teacache"):
            pass
