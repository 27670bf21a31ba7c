"""The served /openapi.json tells the truth about request bodies.

For every field of POST /generate and POST /jobs, values at and just beyond each bound the
served schema states are sent to a live tiny server, and the server must agree with the
schema: accepted exactly when the schema allows the body. Then a throwaway field added to
the declaration shows up in the schema, the validators, the replay keys and the CLI help.
"""

from __future__ import annotations

import base64
import json
import time

import jsonschema_rs
import pytest

from flux2cli.pipeline import fields
from flux2cli.pipeline.fields import FIELD, Field
from flux2cli.pipeline.metadata import ImageParameters, plan_replay
from flux2cli.server.openapi import openapi_document
from images import png_bytes
from server_fixtures import TINY_PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

IMAGE = "data:image/png;base64," + base64.b64encode(png_bytes((48, 32))).decode()


def _body_schema(document: dict) -> dict:
    """GenerateRequest as a self-contained schema (it holds no $ref)."""
    schema = document["components"]["schemas"]["GenerateRequest"]
    assert "$ref" not in json.dumps(schema)
    return schema


def _typed(property_schema: dict) -> dict:
    """The non-null branch of an optional field's anyOf (the prompt has none); a field the
    loaded model cannot use (negative_prompt on a distilled model) has only null."""
    branches = property_schema.get("anyOf", [property_schema])
    return next((b for b in branches if b.get("type") not in ("null", None) or "enum" in b), branches[0])


def _edge_values(name: str, schema: dict) -> list:
    """Values at and just beyond each bound the schema states, and of the wrong type."""
    kind = schema.get("type")
    if "enum" in schema:
        return [*schema["enum"], schema["enum"][0].upper(), "diagonal", 3, None]
    if kind == "boolean":
        return [True, False, "true", 1, 0, None]
    if kind == "integer":
        lo, hi = schema["minimum"], schema["maximum"]
        step = schema.get("multipleOf", 1)
        # lo + 1 and hi - 1 too: a rule the schema forgot (a multipleOf) shows up there
        return [lo - step, lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, hi + step, float(lo), "1", True, 1.5, None]
    if kind == "number":
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema["maximum"]
        return [lo - 0.001, lo, lo + 0.001, hi, hi + 0.001, int(hi), "1", True, None]
    if kind == "string" and name == "prompt":
        top = schema["maxLength"]
        return ["", " ", "a", " a ", "x" * top, "x" * (top + 1), "a\x00b", "a\tb\nc", "\x1b[2J", None]
    if kind == "string":  # a reference image
        return [IMAGE, "", None]
    if kind == "null":
        return ["a", "", None]
    if kind == "array" and schema.get("minItems") == 4:  # expand: four sides, each within its bounds
        hi = schema["items"]["maximum"]
        return [[0, 0, 0, 0], [16, 0, 1, 0], [hi, 0, 0, 0], [hi + 1, 0, 0, 0], [-1, 0, 0, 0], [16, 16, 16],
                [16] * 5, ["16", 0, 0, 0], [True, 0, 0, 0], 16, None]
    if kind == "array":
        top = schema["maxItems"]
        return [[IMAGE] * top, [IMAGE] * (top + 1), [], None]
    raise AssertionError(f"no edge values for {name}: {schema}")


def _bodies(schema: dict, spec) -> list[dict]:
    bodies = []
    for name, property_schema in schema["properties"].items():
        for value in _edge_values(name, _typed(property_schema)):
            body = {"prompt": TINY_PROMPT, name: value}
            if name in ("width", "height"):  # the other one at its smallest, so each is tested alone
                body.setdefault("height" if name == "width" else "width", 16)
            if name in ("strength", "mask_image", "expand"):  # each also with the image it acts on
                bodies.append({**body, "input_image": IMAGE})
            bodies.append(body)
    # the rules between fields: pairs, named sizes against explicit ones, every 4mp size's edges
    for width, height in dict.fromkeys(spec.largest_sizes()):
        bodies += [{"prompt": TINY_PROMPT, "width": width, "height": height},
                   {"prompt": TINY_PROMPT, "width": width + 16, "height": height},
                   {"prompt": TINY_PROMPT, "width": width, "height": height + 16}]
    bodies += [{"prompt": TINY_PROMPT, "width": 64}, {"prompt": TINY_PROMPT, "height": 64, "width": None},
               {"prompt": TINY_PROMPT, "width": 64, "height": 64, "orientation": "square"},
               {"prompt": TINY_PROMPT, "width": 64, "height": 64, "size": None, "orientation": None},
               {"prompt": TINY_PROMPT, "input_image": IMAGE, "input_images": [IMAGE] * 3},
               {"prompt": TINY_PROMPT, "input_image": IMAGE, "input_images": [IMAGE] * 4},
               {"prompt": TINY_PROMPT, "input_image": "", "input_images": [IMAGE] * 4},
               {"prompt": TINY_PROMPT, "input_images": [IMAGE], "mask_image": IMAGE},
               {"prompt": TINY_PROMPT, "input_image": "", "input_images": [], "expand": [16, 0, 0, 0]},
               {"prompt": TINY_PROMPT, "unknown": 1}, {"prompt": None}, {}]
    return bodies


def _accepted(server, body: dict) -> bool:
    """POST /jobs validates exactly as POST /generate does; an accepted job is cancelled at once."""
    reply = server.call("POST", "/jobs", body)
    assert reply.status in (202, 400), (body, reply.status, reply.body[:300])
    if reply.status == 400:
        return False
    job = reply.json()["id"]
    server.call("DELETE", f"/jobs/{job}")
    deadline = time.monotonic() + 60
    while server.call("GET", f"/jobs/{job}").json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job} did not end after DELETE"
        time.sleep(0.02)
    return True


def test_the_server_accepts_exactly_what_the_served_schema_allows(server):
    document = server.call("GET", "/openapi.json").json()
    schema = _body_schema(document)
    validator = jsonschema_rs.validator_for(schema)
    disagreements = []
    bodies = _bodies(schema, server.engine.spec)
    for body in bodies:
        allowed, accepted = validator.is_valid(body), _accepted(server, body)
        if allowed != accepted:
            shown = {k: (v if len(repr(v)) < 60 else f"{repr(v)[:50]}…") for k, v in body.items()}
            disagreements.append(f"schema {'allows' if allowed else 'forbids'}, server "
                                 f"{'accepts' if accepted else 'refuses'}: {shown}")
    assert not disagreements, "\n".join(disagreements)
    assert len(bodies) > 100  # every field's edges were tried


def test_the_document_states_the_loaded_models_own_ranges(tiny_engine):
    from flux2cli.pipeline.registry import get_model

    for name in ("tiny", "dev", "klein-4b"):
        spec = get_model(name)
        steps = _typed(openapi_document(spec)["components"]["schemas"]["GenerateRequest"]["properties"]["steps"])
        assert (steps["minimum"], steps["maximum"]) == spec.step_range
        width = _typed(_body_schema(openapi_document(spec))["properties"]["width"])
        assert width["maximum"] == max(w for w, _ in spec.largest_sizes()) and width["multipleOf"] == 16


def test_a_field_added_to_the_declaration_is_in_the_schema_validators_replay_and_help(server, monkeypatch):
    """One declaration is all a field needs to be served, checked, stored and replayed."""
    monkeypatch.setitem(FIELD, "tile", Field("tile", "integer", "Tiles across.", minimum=1, maximum=8))
    assert "tile" in fields.wire_names() and "tile" in fields.replayed()

    schema = _body_schema(server.call("GET", "/openapi.json").json())
    assert _typed(schema["properties"]["tile"]) == {"type": "integer", "minimum": 1, "maximum": 8}
    assert schema["properties"]["tile"]["description"] == "Addition. Tiles across."

    reply = server.call("POST", "/jobs", {"prompt": TINY_PROMPT, "tile": 9})
    assert reply.status == 400 and "tile must be between 1 and 8 (got 9)" in reply.json()["error"]
    with pytest.raises(Exception) as refused:
        fields.FIELD["tile"].check("2", server.engine.spec)
    assert getattr(refused.value, "field", None) == "tile"

    stored = ImageParameters("flux2", "a cat", {"model": "tiny", "tile": 3})
    assert plan_replay(stored, {}).settings["tile"] == 3
    assert plan_replay(stored, {"tile": 5}).settings["tile"] == 5
    assert FIELD["tile"].option_help() == "Tiles across. 1 to 8."


def test_openai_errors_name_the_field_from_the_error_not_its_message():
    from flux2cli.pipeline.registry import get_model
    from flux2cli.server.openai_compat import OpenAIRequestError
    from flux2cli.server.openai_payload import generation_call

    spec = get_model("tiny")
    for body, param in (({"prompt": "x", "n": 9}, "n"), ({"prompt": "x", "steps": 0}, "steps"),
                        ({"prompt": "x", "size": "64x65"}, "size"), ({"prompt": "   "}, "prompt"),
                        ({"prompt": "x", "seed": -1}, "seed"), ({"prompt": "x", "guidance": "a"}, "guidance")):
        with pytest.raises(OpenAIRequestError) as error:
            generation_call(body, spec)
        assert error.value.param == param, (body, str(error.value))
    with pytest.raises(OpenAIRequestError, match="n must be between 1 and 4"):
        generation_call({"prompt": "x", "n": 9}, spec)
