import pytest

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.modifiers import parse_modifiers


def test_spec_example():
    parsed = parse_modifiers("a beautiful sunset /4k /portrait")
    assert parsed.prompt == "a beautiful sunset"
    assert parsed.overrides == {"size": "4mp", "orientation": "portrait"}


@pytest.mark.parametrize("token,setting,value", [
    ("/square", "orientation", "square"), ("/portrait", "orientation", "portrait"),
    ("/landscape", "orientation", "landscape"), ("/16:9", "orientation", "16:9"),
    ("/1k", "size", "1mp"), ("/2k", "size", "2mp"), ("/4k", "size", "4mp"), ("/2mp", "size", "2mp"),
    ("/PORTRAIT", "orientation", "portrait")])
def test_every_flag_modifier_anywhere(token, setting, value):
    for text in (f"{token} a cat", f"a {token} cat", f"a cat {token}"):
        parsed = parse_modifiers(text)
        assert parsed.prompt == "a cat"
        assert parsed.overrides == {setting: value}


def test_value_modifiers():
    parsed = parse_modifiers("a cat /steps 12 /seed 7 /batch 2")
    assert parsed.prompt == "a cat"
    assert parsed.overrides == {"steps": 12, "seed": 7, "batch": 2}


@pytest.mark.parametrize("text", ["a cat /steps", "a cat /steps many", "/seed -3 x"])
def test_value_modifier_needs_a_number(text):
    with pytest.raises(InvalidRequest, match="whole number"):
        parse_modifiers(text)


def test_unknown_slash_words_stay_in_the_prompt():
    parsed = parse_modifiers("AC/DC poster /vintage 1/2 moon /square")
    assert parsed.prompt == "AC/DC poster /vintage 1/2 moon"
    assert parsed.overrides == {"orientation": "square"}


def test_last_modifier_wins_and_only_modifiers_leave_an_empty_prompt():
    parsed = parse_modifiers("/square /portrait")
    assert parsed.prompt == ""
    assert parsed.overrides == {"orientation": "portrait"}


@pytest.mark.parametrize(("text", "suggestion"), [
    ("a red circle /portrat", "/portrait"), ("a cat /lanscape", "/landscape"), ("a cat /sqare", "/square"),
    ("/stepz 4 a cat", "/steps"), ("a cat /2kk", "/2k"), ("a cat /Portriat", "/portrait")])
def test_a_misspelt_modifier_is_refused_with_what_it_resembles(text, suggestion):
    with pytest.raises(InvalidRequest, match=f"did you mean {suggestion}\\?"):
        parse_modifiers(text)


def test_a_double_slash_keeps_a_slash_word_in_the_prompt():
    parsed = parse_modifiers("a poster that says //portrat and //square /square")
    assert parsed.prompt == "a poster that says /portrat and /square"
    assert parsed.overrides == {"orientation": "square"}


@pytest.mark.parametrize("word", ["/vintage", "/r/pics", "/okay", "/neon", "/sepia", "/steampunk"])
def test_slash_words_far_from_every_modifier_stay_in_the_prompt(word):
    assert parse_modifiers(f"a cat {word}").prompt == f"a cat {word}"
