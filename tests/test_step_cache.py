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


# -- wired through the request, the engine, the CLI and the server ---------------------------

def test_the_cli_runs_fewer_evaluations_than_steps_and_says_so_everywhere(tmp_path):
    import json
    from pathlib import Path

    from PIL import Image

    from console_script import run

    result = run("generate", "a red circle on a blue background", "--model", "tiny", "--local", "--seed", "3",
                 "--steps", str(STEPS), "--cache", "fbc", "--output-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    image = json.loads(result.stdout)["images"][0]
    work = image["evaluations"]
    assert work["cache"] == "fbc" and work["steps"] == work["transformer_calls"] == STEPS
    assert 0 < work["full_evaluations"] < STEPS
    path = Path(image["path"])
    with Image.open(path) as png:
        stored = json.loads(png.text["flux2"])
        assert png.size == (80, 48)
    assert stored["cache"] == "fbc" and stored["evaluations"] == work  # replay restores the mode
    assert f"# Cache: fbc, {work['full_evaluations']} full transformer evaluations of {STEPS} calls" \
        in path.with_suffix(".prompt").read_text()


def test_a_bad_cache_mode_is_one_line_and_exit_2(tmp_path):
    from console_script import run

    result = run("generate", "a red circle", "--model", "tiny", "--local", "--cache", "teacache",
                 "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: cache must be one of off, taylorseer, fbc (got 'teacache')"]


def test_the_engine_default_applies_when_a_request_names_no_cache(tiny_engine, tmp_path):
    from flux2cli.pipeline.request import GenerationRequest

    request = GenerationRequest.create("a red circle on a blue background", model="tiny", steps=STEPS, seed=3,
                                       width=64, height=64)
    plain = tiny_engine.generate(request)[0].evaluations
    assert plain == {"cache": "off", "steps": STEPS, "transformer_calls": STEPS, "full_evaluations": STEPS}
    tiny_engine.default_cache = "taylorseer"  # what repl/serve --cache set
    try:
        by_default = tiny_engine.generate_and_save(request, tmp_path)[0]
        named = tiny_engine.generate(GenerationRequest.create(
            "a red circle on a blue background", model="tiny", steps=STEPS, seed=3, width=64, height=64,
            cache="off"))[0].evaluations
    finally:
        tiny_engine.default_cache = "off"
    assert by_default.evaluations["cache"] == "taylorseer" and by_default.evaluations["full_evaluations"] < STEPS
    assert named["full_evaluations"] == STEPS  # the request's field wins over the default


@pytest.mark.parametrize("mode", ["taylorseer", "fbc"])
def test_the_server_takes_a_cache_field_and_reports_the_evaluations(server, mode):
    from server_fixtures import TINY_PROMPT

    reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": STEPS, "seed": 5, "cache": mode},
                        timeout=120)
    assert reply.status == 200, reply.body
    work = reply.json()["images"][0]["evaluations"]
    assert work["cache"] == mode and work["transformer_calls"] == STEPS and 0 < work["full_evaluations"] < STEPS
    refused = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "cache": "teacache"})
    assert refused.status == 400 and "cache must be one of" in refused.json()["error"]
