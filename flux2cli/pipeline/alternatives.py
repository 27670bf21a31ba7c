"""Prompt alternatives: ``a {red|blue} circle`` stands for "a red circle" and "a blue circle".

Several groups multiply (``{a|b} {c|d}`` is four prompts); ``\\{``, ``\\}`` and ``\\|`` are
the characters themselves; any other backslash is kept as typed. Written by hand: the
syntax is a dozen lines, and the template libraries that have it (dynamicprompts, Jinja)
bring wildcards, weights or code execution that a prompt must not have.
"""

from __future__ import annotations

import math

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.fields import MAX_BATCH

_ESCAPED = "{}|"


def expand_alternatives(text: str, batch: int = 1) -> tuple[str, ...] | None:
    """The prompts ``text`` stands for, in order (the first group varies slowest), or None when
    it has no group and no escape (the prompt is used as written). The batch limit counts
    every image, ``batch`` for each prompt: more is refused before any prompt is built."""
    parts = _parse(text)
    if len(parts) == 1 and isinstance(parts[0], str) and parts[0] == text:
        return None
    groups = [part for part in parts if isinstance(part, list)]
    count = math.prod(len(group) for group in groups)
    if count * batch > MAX_BATCH:
        sizes = " x ".join(str(len(group)) for group in groups)
        raise InvalidRequest(f"the prompt's alternatives make {count} prompts ({sizes}), {count * batch} images "
                             f"at batch {batch}; a request makes at most {MAX_BATCH}", field="prompt")
    prompts = [""]
    for part in parts:
        options = [part] if isinstance(part, str) else part
        prompts = [prompt + option for prompt in prompts for option in options]
    return tuple(prompts)


def escape_alternatives(text: str) -> str:
    """``text`` as a prompt that stands for itself: a stored prompt's braces are not a template."""
    return text.replace("{", "\\{").replace("}", "\\}")


def _parse(text: str) -> list[str | list[str]]:
    """Literal text (str) and groups (a list of their alternatives), escapes resolved."""
    parts: list[str | list[str]] = []
    literal: list[str] = []
    group: list[str] | None = None  # the alternatives so far, while inside braces
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPED:
            literal.append(text[i + 1])
            i += 2
            continue
        if char == "{":
            if group is not None:
                raise _refuse("alternatives cannot be nested: a { inside {...}; write \\{ for a literal brace")
            parts.append("".join(literal))
            literal, group = [], []
        elif char == "|" and group is not None:
            group.append("".join(literal))
            literal = []
        elif char == "}":
            if group is None:
                raise _refuse("a } without its {: write \\} for a literal brace")
            group.append("".join(literal))
            parts.append(group)
            literal, group = [], None
        else:
            literal.append(char)
        i += 1
    if group is not None:
        raise _refuse("a { without its }: close the alternatives, e.g. {red|blue}, or write \\{ for a literal brace")
    parts.append("".join(literal))
    return [part for part in parts if part != ""] or [""]


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(f"prompt: {message}", field="prompt")
