"""Every field of POST /generate and POST /jobs out of range, of the wrong type or unknown,
and prompts built to break files, terminals and pages. Refusals are one 400 line naming
the field; accepted prompts are stored as text, byte for byte."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.registry import get_model
from flux2cli.pipeline.request import MAX_SEED, GenerationRequest
from flux2cli.pipeline.fields import wire_names
from flux2cli.server.routes import STATIC_DIR
from guarded_server import refused
from images import png_bytes
from server_fixtures import TINY_PROMPT, assert_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROUTES = ("/generate", "/jobs")


@pytest.mark.parametrize(("body", "words"), [
    ({}, "prompt is required"),
    ({"prompt": None}, "prompt is required"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": 42}, "prompt must be a text string"),
    ({"prompt": ["a", "cat"]}, "prompt must be a text string"),
    ({"prompt": {"text": "a cat"}}, "prompt must be a text string"),
    ({"prompt": True}, "prompt must be a text string"),
    ({"prompt": "x" * 4001}, "the limit is 4000"),
    ({"prompt": "x" * 2**20}, "the limit is 4000"),  # 1 MB
    ({"prompt": "a\x00b"}, "control characters"),
    ({"prompt": "red \x1b[2J\x1b]0;owned\x07 circle"}, "control characters"),  # terminal escapes
    ({"prompt": "a cat \ud800"}, "unpaired surrogates"),
    ({"prompt": "x", "steps": 0}, "steps must be between"),
    ({"prompt": "x", "steps": 51}, "steps must be between"),
    ({"prompt": "x", "steps": "ten"}, "steps must be a whole number"),
    ({"prompt": "x", "steps": "10"}, "steps must be a whole number"),
    ({"prompt": "x", "steps": True}, "steps must be a whole number"),
    ({"prompt": "x", "steps": 2.5}, "steps must be a whole number"),
    ({"prompt": "x", "steps": [10]}, "steps must be a whole number"),
    ({"prompt": "x", "batch": 0}, "batch must be between 1 and 4"),
    ({"prompt": "x", "batch": 5}, "batch must be between 1 and 4"),
    ({"prompt": "x", "batch": -1}, "batch must be between 1 and 4"),
    ({"prompt": "x", "batch": "2"}, "batch must be a whole number"),
    ({"prompt": "x", "batch": 1.5}, "batch must be a whole number"),
    ({"prompt": "x", "seed": -1}, "seed must be between"),
    ({"prompt": "x", "seed": MAX_SEED}, "seed must be between"),
    ({"prompt": "x", "seed": 2**64}, "seed must be between"),
    ({"prompt": "x", "seed": 10**30}, "seed must be between"),
    ({"prompt": "x", "seed": 1e300}, "seed must be between"),
    ({"prompt": "x", "seed": "12"}, "seed must be a whole number"),
    ({"prompt": "x", "seed": 1.5}, "seed must be a whole number"),
    ({"prompt": "x", "orientation": "diagonal"}, "orientation must be one of"),
    ({"prompt": "x", "orientation": 3}, "orientation must be one of"),
    ({"prompt": "x", "orientation": ["square"]}, "orientation must be one of"),
    ({"prompt": "x", "size": "8mp"}, "size must be one of"),
    ({"prompt": "x", "size": 1}, "size must be one of"),
    ({"prompt": "x", "strength": 1.1}, "strength must be between 0.01 and 1"),
    ({"prompt": "x", "strength": 1.5}, "strength must be between 0.01 and 1"),
    ({"prompt": "x", "strength": -0.1}, "strength must be between 0.01 and 1"),
    ({"prompt": "x", "strength": 0}, "strength must be between 0.01 and 1"),
    ({"prompt": "x", "strength": "high"}, "strength must be a number between 0.01 and 1"),
    ({"prompt": "x", "strength": True}, "strength must be a number between 0.01 and 1"),
    ({"prompt": "x", "width": 80}, "give both width and height"),
    ({"prompt": "x", "width": 81, "height": 48}, "width must be a multiple of 16"),
    ({"prompt": "x", "width": 10**6, "height": 16}, "width must be between"),
    ({"prompt": "x", "width": 80, "height": 48, "orientation": "square"}, "not both"),
    ({"prompt": "x", "guidance": 1e9}, "guidance must be between"),
    ({"prompt": "x", "guidance": "4"}, "guidance must be a number"),
    ({"prompt": "x", "input_image": "not base64!!"}, "input_image is not valid base64"),
])
def test_invalid_requests_get_400_with_a_message(server, body, words):
    for route in ROUTES:
        message = refused(server, server.call("POST", route, body), 400)
        assert words in message, message
        assert len(message) <= 400  # a 1 MB value is described, never echoed


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("field", ["steps", "batch", "seed", "strength", "guidance"])
def test_nan_and_infinity_are_not_numbers(server, field, constant):
    raw = b'{"prompt": "x", "%s": %s}' % (field.encode(), constant)
    reply = server.call("POST", "/generate", raw=raw, headers={"Content-Type": "application/json"})
    assert "not valid JSON" in refused(server, reply, 400)


def test_steps_follow_the_range_the_loaded_model_declares(server):
    """The spec's 10-50 is [dev]'s registry range; the tiny model declares its own."""
    spec = server.engine.spec
    lo, hi = spec.step_range
    assert spec.step_range == get_model(spec.name).step_range
    for steps in sorted({-1, 0, 9, 51, 10**9, lo - 1, hi + 1}):
        body = {"prompt": TINY_PROMPT, "steps": steps, "seed": 5}
        reply = server.call("POST", "/generate", body)
        if lo <= steps <= hi:
            assert reply.status == 200, (steps, reply.body[:200])
            name = reply.json()["images"][0]["filename"]
            sidecar = (server.config.output_dir / name).with_suffix(".prompt").read_text()
            assert f"# Steps: {steps}\n" in sidecar
        else:
            message = refused(server, reply, 400)
            assert f"steps must be between {lo} and {hi} for {spec.display_name}" in message
    reply = server.call("POST", "/generate", raw=b'{"prompt": "x", "steps": 1e9}',
                        headers={"Content-Type": "application/json"})
    assert f"between {lo} and {hi}" in refused(server, reply, 400)


def test_dev_keeps_the_spec_range_of_10_to_50():
    dev = get_model("dev")
    assert dev.step_range == (10, 50)
    for steps in (9, 51):
        with pytest.raises(InvalidRequest, match="steps must be between 10 and 50"):
            GenerationRequest.create("x", model=dev, steps=steps)


def test_unknown_fields_are_refused_by_name(server):
    """A misspelt field would silently change the image; clients written for the spec send
    only its fields, which are all accepted (see the next test)."""
    for route in ROUTES:
        for extra in ({"negative": "blurry"}, {"step": 4}, {"Prompt": "x"}, {"__proto__": {}},
                      {f"k{i}": i for i in range(10_000)}):
            message = refused(server, server.call("POST", route, {"prompt": "x", **extra}), 400)
            assert f"unknown field {sorted(extra)[0]!r}" in message
            assert f"allowed fields: {', '.join(wire_names())}" in message
            assert len(message) <= 400


def test_a_client_written_for_the_spec_keeps_working(server):
    """Every field of the spec's example at once, then the same with explicit nulls."""
    reference = base64.b64encode(png_bytes((48, 32))).decode()
    spec_body = {"prompt": TINY_PROMPT, "orientation": "landscape", "size": "1mp", "steps": 2,
                 "seed": MAX_SEED - 1, "batch": 1, "input_image": f"data:image/png;base64,{reference}",
                 "strength": 0.75}
    reply = server.call("POST", "/generate", spec_body)
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["images"][0]["seed"] == MAX_SEED - 1
    nulls = {"prompt": TINY_PROMPT, **{name: None for name in ("orientation", "size", "steps", "seed", "batch",
                                                                "input_image")}, "strength": 0.75}
    reply = server.call("POST", "/generate", nulls)
    assert reply.status == 200, reply.body[:300]
    assert set(reply.json()) == {"success", "images", "generation_time"}


def test_hostile_prompts_are_stored_and_returned_as_plain_text(server):
    hostile = ('<script>alert(1)</script><img src=x onerror=alert(2)> \u202egnp.exe a red circle'
               '\n# Seed: 1\r\n# Steps: 99 \u2028# Dimensions: 1x1')
    reply = server.call("POST", "/jobs", {"prompt": hostile, "steps": 1, "seed": 11})
    assert reply.status == 202
    job = reply.json()["id"]
    events = list(server.events(job))
    assert events[-1]["event"] == "done", events[-1]
    assert server.call("GET", f"/jobs/{job}").json()["prompt"] == hostile  # JSON carries it exactly
    name = events[-1]["data"]["result"]["images"][0]["filename"]
    path: Path = server.config.output_dir / name
    # The sidecar keeps its six lines: a prompt cannot forge a seed, steps or size line.
    lines = path.with_suffix(".prompt").read_text(encoding="utf-8").splitlines()
    assert [line.split(":")[0] for line in lines] == ["# Raw input", "# Prompt", "# Dimensions", "# Seed",
                                                     "# Steps", "# Timings"]
    assert lines[3] == "# Seed: 11" and lines[4] == "# Steps: 1" and lines[2] == "# Dimensions: 80x48"
    assert "<script>alert(1)</script>" in lines[1] and "\u202egnp.exe" in lines[1]
    with Image.open(path) as png:
        assert json.loads(png.text["flux2"])["prompt"] == hostile
        assert png.text["parameters"].startswith(hostile)
        assert re.search(r"\nSteps: 1, .*Seed: 11, ", png.text["parameters"])


def test_the_page_never_turns_text_into_html():
    """Prompts reach the page as text (the browser check is test_web_ui.py's
    test_enter_submits_and_prompts_stay_text); no script uses an HTML sink at all."""
    sinks = re.compile(r"\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|"
                       r"createContextualFragment|DOMParser|\beval\s*\(|new Function\s*\(")
    for script in STATIC_DIR.glob("*.js"):
        assert not sinks.search(script.read_text(encoding="utf-8")), script.name


def test_refusals_never_echo_a_large_value(server):
    for field in ("orientation", "size", "steps", "seed"):
        reply = server.call("POST", "/generate", {"prompt": "x", field: "<b>" + "y" * 100_000})
        message = assert_error(reply, 400)
        assert len(reply.body) < 1000 and message.count("y") < 400
        server.assert_survived()
