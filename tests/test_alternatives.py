"""Prompt alternatives (issue 19.6): ``a {red|blue} circle`` is one image per prompt, below every front end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.alternatives import escape_alternatives, expand_alternatives
from flux2cli.pipeline.metadata import ImageParameters, plan_replay, read_parameters
from flux2cli.pipeline.request import GenerationRequest

TEMPLATE = "a {red|blue} circle on a white background"


def test_groups_multiply_in_order_and_escapes_are_text():
    assert expand_alternatives("a {red|blue} {circle|square}") == (
        "a red circle", "a red square", "a blue circle", "a blue square")
    assert expand_alternatives(r"a \{curly\} brace, a \| bar | kept, {one}") == (
        "a {curly} brace, a | bar | kept, one",)
    assert expand_alternatives(r"C:\path a|b") is None  # nothing to expand: the prompt as written
    assert expand_alternatives("{a|b}", batch=2) == ("a", "b")


@pytest.mark.parametrize("text, batch, words", [
    ("a {red|blue circle", 1, "without its }"),
    ("a red} circle", 1, "without its {"),
    ("a {red|{dark|light} blue}", 1, "nested"),
    ("{a|b|c} {d|e}", 1, "6 prompts (3 x 2), 6 images at batch 1; a request makes at most 4"),
    ("{a|b|c}", 2, "6 images at batch 2"),
    ("{" + "|".join("x" * 5) + "}" * 1 + " {a|b}" * 40, 1, "prompts"),  # 5 x 2^40: refused, never built
])
def test_bad_templates_and_too_many_images_are_one_line_refusals(text, batch, words):
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest.create(text, model="tiny", batch=batch)
    assert words in str(caught.value) and caught.value.field == "prompt"


def test_an_empty_alternative_is_refused_like_an_empty_prompt():
    with pytest.raises(InvalidRequest, match="prompt is empty"):
        GenerationRequest.create("{|a circle}", model="tiny")


def test_each_prompt_has_its_own_seeds_and_records_its_template():
    request = GenerationRequest.create(TEMPLATE, model="tiny", seed=40, batch=2)
    assert request.prompt == TEMPLATE and request.image_count == 4 and request.seeds == [40, 41, 42, 43]
    variants = request.variants()
    assert [(v.prompt, v.seeds) for v in variants] == [
        ("a red circle on a white background", [40, 41]), ("a blue circle on a white background", [42, 43])]
    assert all(v.to_metadata()["template"] == TEMPLATE and v.raw_input == TEMPLATE for v in variants)
    plain = GenerationRequest.create("a red circle", model="tiny", seed=1)
    assert plain.variants() == [plain] and "template" not in plain.to_metadata()


def test_replay_keeps_a_stored_prompts_braces_as_text():
    stored = ImageParameters("flux2", "a {curly} brace", {"seed": 3})
    replay = plan_replay(stored, {}, default_model="tiny")
    assert GenerationRequest.create(replay.prompt, model="tiny").variants()[0].prompt == "a {curly} brace"
    assert escape_alternatives("{a|b}") == r"\{a|b\}"


def _saved(saved) -> dict[str, tuple[int, bytes]]:
    """prompt -> (seed, pixels) of each saved image, read back from its own metadata."""
    out = {}
    for item in saved:
        params = read_parameters(item.path)
        out[params.prompt] = (params.settings["seed"], Image.open(item.path).convert("RGB").tobytes())
        assert params.extra["template"] == TEMPLATE
        sidecar = item.sidecar.read_text()
        assert f"# Raw input: {TEMPLATE}\n" in sidecar and f"# Prompt: {params.prompt}\n" in sidecar
    return out


@pytest.mark.slow
def test_each_alternative_is_the_image_its_own_prompt_makes(tiny_engine, tmp_path):
    expanded = GenerationRequest.create(TEMPLATE, model="tiny", seed=7, steps=4)
    images = _saved(tiny_engine.generate_and_save(expanded, tmp_path / "both"))
    assert [seed for seed, _ in images.values()] == [7, 8]
    for prompt, seed in (("a red circle on a white background", 7), ("a blue circle on a white background", 8)):
        alone = tiny_engine.generate_and_save(GenerationRequest.create(prompt, model="tiny", seed=seed, steps=4),
                                              tmp_path / "alone")
        assert Image.open(alone[0].path).convert("RGB").tobytes() == images[prompt][1]
    assert images["a red circle on a white background"][1] != images["a blue circle on a white background"][1]


@pytest.mark.slow
def test_the_server_expands_and_counts_the_batch_limit(server):
    reply = server.call("POST", "/generate", {"prompt": TEMPLATE, "steps": 1, "seed": 90, "batch": 2})
    assert reply.status == 200, reply.body
    names = [image["filename"] for image in reply.json()["images"]]
    assert [image["seed"] for image in reply.json()["images"]] == [90, 91, 92, 93]
    prompts = [read_parameters(server.config.output_dir / name).prompt for name in names]
    assert prompts == ["a red circle on a white background"] * 2 + ["a blue circle on a white background"] * 2
    refused = server.call("POST", "/generate", {"prompt": TEMPLATE, "steps": 1, "batch": 3})
    assert refused.status == 400 and "6 images at batch 3" in refused.json()["error"]


def test_job_progress_counts_every_image_of_the_expansion(server):
    reply = server.call("POST", "/jobs", {"prompt": TEMPLATE, "steps": 2, "seed": 90, "batch": 2})
    assert reply.status == 202, reply.body
    events = list(server.events(reply.json()["id"]))
    steps = [event["data"] for event in events if event["event"] == "step"]
    assert {step["batch"] for step in steps} == {4}  # 2 prompts x batch 2: "image 3 of 4", not "of 2"
    # One pipeline pass per prompt, its batch at once: images 1-2, then 3-4.
    assert [step["current"] for step in steps] == [1, 1, 3, 3]


@pytest.mark.slow
def test_the_cli_makes_one_image_per_alternative(tmp_path):
    run = subprocess.run([sys.executable, "-m", "flux2cli", "generate", TEMPLATE + r" \{no group\}", "--model",
                          "tiny", "--steps", "1", "--seed", "5", "-o", str(tmp_path), "--json", "--local"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    images = json.loads(run.stdout)["images"]
    assert [image["seed"] for image in images] == [5, 6]
    prompts = [read_parameters(tmp_path / image["filename"]).prompt for image in images]
    assert prompts == ["a red circle on a white background {no group}", "a blue circle on a white background {no group}"]


@pytest.mark.slow
def test_the_repl_makes_one_image_per_alternative(tiny_engine, tmp_path):
    import io

    from rich.console import Console

    from flux2cli.repl.app import ReplApp, StreamReader
    from flux2cli.repl.session import ReplSession

    out, err = io.StringIO(), io.StringIO()
    app = ReplApp(ReplSession(tiny_engine.spec, output_dir=tmp_path), tiny_engine, tmp_path,
                  out=Console(file=out, width=300, highlight=False), err=Console(file=err, width=300, highlight=False),
                  piped=True)
    script = f"{TEMPLATE} /steps 1 /seed 11\n{{a|b|c}} {{d|e}}\nquit\n"
    code = app.run(StreamReader(io.StringIO(script)))
    paths = out.getvalue().split()
    assert len(paths) == 2, (out.getvalue(), err.getvalue())
    stored = [read_parameters(path) for path in paths]
    assert [(p.prompt, p.settings["seed"]) for p in stored] == [
        ("a red circle on a white background", 11), ("a blue circle on a white background", 12)]
    assert "6 images at batch 1" in err.getvalue() and code != 0  # the refused line fails the script
