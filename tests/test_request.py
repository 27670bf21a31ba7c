import math

import pytest

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.registry import get_model
from flux2cli.pipeline.request import MAX_SEED, GenerationRequest, ReferenceImage, normalize_size

SPEC_TABLE = {  # the spec's 1 MP table, and its linear size multiplier
    "square": (1024, 1024),
    "portrait": (768, 1344),
    "landscape": (1344, 768),
    "16:9": (1360, 768),
}


@pytest.mark.parametrize("orientation", SPEC_TABLE)
@pytest.mark.parametrize("size,multiplier", [("1mp", 1), ("2mp", 2), ("4mp", 4)])
def test_dev_sizes_follow_the_spec_table(orientation, size, multiplier):
    request = GenerationRequest.create("x", model="dev", orientation=orientation, size=size)
    base_w, base_h = SPEC_TABLE[orientation]
    assert (request.width, request.height) == (base_w * multiplier, base_h * multiplier)
    assert request.width % 16 == 0 and request.height % 16 == 0


def test_spec_example_landscape_4mp():
    request = GenerationRequest.create("x", model="dev", orientation="landscape", size="4mp")
    assert (request.width, request.height) == (5376, 3072)


@pytest.mark.parametrize("orientation,expected", [
    ("square", (64, 64)), ("landscape", (80, 48)), ("portrait", (48, 80)), ("16:9", (80, 48))])
def test_tiny_sizes_are_the_table_divided_by_16(orientation, expected):
    request = GenerationRequest.create("x", model="tiny", orientation=orientation)
    assert (request.width, request.height) == expected
    two = GenerationRequest.create("x", model="tiny", orientation=orientation, size="2mp")
    assert (two.width, two.height) == (expected[0] * 2, expected[1] * 2)


def test_defaults_come_from_the_model():
    dev = GenerationRequest.create("x", model="dev")
    klein = GenerationRequest.create("x", model="klein-4b")
    assert (dev.steps, dev.guidance, dev.orientation, dev.size) == (25, 4.0, "landscape", "1mp")
    assert (klein.steps, klein.guidance) == (4, None)
    assert dev.strength is None and dev.batch == 1


def test_the_wire_takes_exact_names_and_front_ends_normalise_what_people_type():
    request = GenerationRequest.create("x", model="dev", orientation="portrait", size=normalize_size(" 2K"))
    assert (request.width, request.height, request.size) == (1536, 2688, "2mp")
    for field, value in (("orientation", "Portrait"), ("size", "2k"), ("size", "2MP")):
        with pytest.raises(InvalidRequest, match=f"{field} must be one of") as info:
            GenerationRequest.create("x", model="dev", **{field: value})
        assert info.value.field == field


@pytest.mark.parametrize("steps", [-1, 0, 9, 51, 10**9, "10", None.__class__, 12.5, math.nan, True])
def test_dev_steps_out_of_range_or_wrong_type(steps):
    with pytest.raises(InvalidRequest, match="steps must be"):
        GenerationRequest.create("x", model="dev", steps=steps)


def test_steps_message_says_what_is_allowed():
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest.create("x", model="dev", steps=9)
    assert "between 10 and 50" in str(info.value) and "FLUX.2-dev" in str(info.value)


def test_klein_allows_few_steps():
    assert GenerationRequest.create("x", model="klein-4b", steps=2).steps == 2


@pytest.mark.parametrize("batch", [0, 5, "2", 1.5])
def test_batch_range(batch):
    with pytest.raises(InvalidRequest, match="batch"):
        GenerationRequest.create("x", model="tiny", batch=batch)


def test_seeds_of_a_batch_are_consecutive():
    request = GenerationRequest.create("x", model="tiny", seed=100, batch=4)
    assert request.seeds == [100, 101, 102, 103]


@pytest.mark.parametrize("seed", [-1, MAX_SEED, 2**64, "7", math.inf])
def test_seed_range(seed):
    with pytest.raises(InvalidRequest, match="seed"):
        GenerationRequest.create("x", model="tiny", seed=seed)


def test_any_seed_takes_any_batch_and_the_seeds_wrap_below_2_63():
    """No rule ties seed to batch, so the schema's seed range is the whole truth."""
    request = GenerationRequest.create("x", model="tiny", seed=MAX_SEED - 2, batch=4)
    assert request.seeds == [MAX_SEED - 2, MAX_SEED - 1, 0, 1]


def test_random_seeds_are_below_2_32_so_javascript_shows_them_exactly():
    seeds = {GenerationRequest.create("x", model="tiny").seed for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize("prompt,message", [
    ("", "empty"), ("   ", "empty"), (None, "text"), (42, "text"),
    ("a\x00b", "control"), ("x" * 4001, "limit")])
def test_bad_prompts(prompt, message):
    with pytest.raises(InvalidRequest, match=message):
        GenerationRequest.create(prompt, model="tiny")


def test_prompt_is_stripped_and_may_hold_markup_as_text():
    request = GenerationRequest.create("  <script>alert(1)</script> \u202e ", model="tiny")
    assert request.prompt == "<script>alert(1)</script> \u202e"


@pytest.mark.parametrize("field,value", [("orientation", "diagonal"), ("orientation", 3), ("size", "8mp")])
def test_unknown_orientation_or_size(field, value):
    with pytest.raises(InvalidRequest, match=field):
        GenerationRequest.create("x", model="tiny", **{field: value})


def test_explicit_dimensions():
    request = GenerationRequest.create("x", model="dev", width=1024, height=512)
    assert (request.width, request.height, request.orientation, request.size) == (1024, 512, None, None)
    with pytest.raises(InvalidRequest, match="width must be a multiple of 16"):
        GenerationRequest.create("x", model="dev", width=1000, height=512)
    with pytest.raises(InvalidRequest, match="both"):
        GenerationRequest.create("x", model="dev", width=1024)
    with pytest.raises(InvalidRequest, match="not both"):
        GenerationRequest.create("x", model="dev", width=1024, height=512, orientation="square")
    with pytest.raises(InvalidRequest, match="larger"):
        GenerationRequest.create("x", model="dev", width=5376, height=5376)


def test_explicit_dimensions_fit_within_one_of_the_models_4mp_sizes():
    """The spec's 4mp square (4096x4096) and 16:9 (5440x3072) can be named explicitly too."""
    for width, height in ((4096, 4096), (5440, 3072), (3072, 5376), (16, 16)):
        request = GenerationRequest.create("x", model="dev", width=width, height=height)
        assert (request.width, request.height) == (width, height)
    for width, height in ((4112, 4096), (5440, 3088), (3088, 5376)):
        with pytest.raises(InvalidRequest, match="must fit within one of 4096x4096, 3072x5376, 5376x3072"):
            GenerationRequest.create("x", model="dev", width=width, height=height)


def test_guidance_is_ignored_with_a_notice_on_distilled_models():
    request = GenerationRequest.create("x", model="klein-4b", guidance=3.5)
    assert request.guidance is None
    assert any("ignored" in notice for notice in request.notices)
    assert GenerationRequest.create("x", model="dev", guidance=3.5).guidance == 3.5


def test_strength_needs_a_reference_image():
    with pytest.raises(InvalidRequest, match="reference image"):
        GenerationRequest.create("x", model="tiny", strength=0.5)


def test_strength_range_and_default_with_a_reference():
    ref = ReferenceImage("in.png", object())
    assert GenerationRequest.create("x", model="tiny", reference_images=[ref]).strength == 0.75
    for bad in (-0.1, 0.0, 1.1, "0.5"):
        with pytest.raises(InvalidRequest, match="strength"):
            GenerationRequest.create("x", model="tiny", reference_images=[ref], strength=bad)


def test_request_is_immutable_and_serialisable():
    request = GenerationRequest.create("a cat", model=get_model("tiny"), seed=5, raw_input="a cat /square")
    with pytest.raises(AttributeError):
        request.steps = 3
    meta = request.to_metadata()
    assert meta["raw_input"] == "a cat /square" and meta["seed"] == 5 and meta["model"] == "tiny"
