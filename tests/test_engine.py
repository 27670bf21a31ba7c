"""The engine end to end on the embedded tiny model (real diffusers pipeline, CPU)."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from flux2cli.errors import GenerationCancelled, GenerationError
from flux2cli.pipeline.request import GenerationRequest

STEPS = 2  # enough to exercise the loop; the images need not be good here


def _request(prompt="a red circle on a blue background", **kwargs):
    kwargs.setdefault("steps", STEPS)
    kwargs.setdefault("orientation", "square")
    return GenerationRequest.create(prompt, model="tiny", **kwargs)


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_same_seed_same_pixels_different_seed_different(tiny_engine):
    first = tiny_engine.generate(_request(seed=1))[0]
    again = tiny_engine.generate(_request(seed=1))[0]
    other = tiny_engine.generate(_request(seed=2))[0]
    assert first.image.size == (64, 64) and first.seed == 1
    assert np.array_equal(_pixels(first.image), _pixels(again.image))
    assert np.abs(_pixels(first.image) - _pixels(other.image)).mean() > 1.0


def test_embeddings_path_matches_the_pipelines_own_prompt_path(tiny_engine):
    request = _request("a green square on a white background", seed=11, orientation="landscape")
    ours = tiny_engine.generate(request)[0].image
    with torch.inference_mode():
        direct = tiny_engine.pipe(
            prompt=request.prompt, height=request.height, width=request.width,
            num_inference_steps=request.steps, guidance_scale=1.0,
            generator=torch.Generator("cpu").manual_seed(11),
            max_sequence_length=tiny_engine.spec.max_sequence_length,
        ).images[0]
    assert np.array_equal(_pixels(ours), _pixels(direct))


def test_a_repeated_prompt_is_not_encoded_again(tiny_engine, monkeypatch):
    prompt = "a purple triangle on a yellow background"
    first = tiny_engine.generate(_request(prompt, seed=3))[0]
    assert first.timings["encoding"] > 0

    calls = []
    real_encode = tiny_engine.encoder.encoder.encode
    monkeypatch.setattr(tiny_engine.encoder.encoder, "encode", lambda key: calls.append(key) or real_encode(key))
    second = tiny_engine.generate(_request(prompt, seed=4))[0]
    assert calls == [] and second.timings["encoding"] == 0.0
    tiny_engine.generate(_request(prompt + " now", seed=4))
    assert [key.prompt for key in calls] == [prompt + " now"]


def test_batch_uses_consecutive_seeds_each_reproducible_alone(tiny_engine):
    batch = tiny_engine.generate(_request(seed=40, batch=4))
    assert [result.seed for result in batch] == [40, 41, 42, 43]
    alone = tiny_engine.generate(_request(seed=42))[0]
    # Batched matmuls sum in another order: a pixel may round one level differently.
    assert np.abs(_pixels(batch[2].image) - _pixels(alone.image)).max() <= 1
    assert not np.array_equal(_pixels(batch[0].image), _pixels(batch[1].image))


def test_step_events_and_cancellation(tiny_engine):
    events = []
    done = tiny_engine.generate(_request(seed=5, steps=3), on_step=events.append)
    assert len(done) == 1
    assert [(e.step, e.total_steps) for e in events] == [(1, 3), (2, 3), (3, 3)]

    cancel = threading.Event()

    def stop_after_two(event):
        if event.step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled) as info:
        tiny_engine.generate(_request(seed=5, steps=6), on_step=stop_after_two, cancel=cancel)
    assert (info.value.step, info.value.total_steps) == (2, 6)
    assert len(tiny_engine.generate(_request(seed=6))) == 1  # the engine still works


def test_generate_and_save_writes_files_of_the_requested_size(tiny_engine, tmp_path):
    saved = tiny_engine.generate_and_save(_request(seed=9, orientation="portrait", batch=2), tmp_path)
    assert [s.seed for s in saved] == [9, 10]
    for item in saved:
        with Image.open(item.path) as png:
            assert png.size == (48, 80)
        assert f"# Seed: {item.seed}\n" in item.sidecar.read_text()
        assert set(item.timings) == {"encoding", "diffusion", "save", "total"}


def test_a_request_for_another_model_is_refused(tiny_engine):
    with pytest.raises(GenerationError, match="runs tiny"):
        tiny_engine.generate(GenerationRequest.create("x", model="klein-4b"))


def test_describe_names_the_loaded_model(tiny_engine):
    assert tiny_engine.describe() == {"model": "flux2-tiny", "encoder": "local encoder",
                                      "description": "flux2-tiny with local encoder"}
