"""Inline modifiers: ``a sunset /4k /portrait`` → prompt "a sunset" + settings.

Shared by the REPL and ``flux2 generate``. A ``/word`` that is not a modifier stays in
the prompt text (prompts may well contain slashes: "AC/DC", "1/2 moon"), unless it is one
or two letters away from a modifier: ``/portrat`` is a typo that would otherwise reach
the model, so it is refused with the modifier it resembles. ``//word`` keeps ``/word`` in
the prompt whatever it resembles.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.request import ORIENTATIONS, SIZE_ALIASES, SIZES

# Modifiers that take no value: token → (setting, value).
FLAG_MODIFIERS: dict[str, tuple[str, str]] = {
    **{f"/{o}": ("orientation", o) for o in ORIENTATIONS},
    **{f"/{s}": ("size", s) for s in SIZES},
    **{f"/{alias}": ("size", size) for alias, size in SIZE_ALIASES.items()},
}
_SLASH_WORD = re.compile(r"^/[\w:.-]+$")
# Modifiers followed by a whole number.
VALUE_MODIFIERS: dict[str, str] = {"/steps": "steps", "/seed": "seed", "/batch": "batch"}


@dataclass(frozen=True)
class ParsedInput:
    prompt: str
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_modifiers(text: str) -> ParsedInput:
    words: list[str] = []
    overrides: dict[str, Any] = {}
    tokens = text.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        key = token.lower()
        if token.startswith("//"):
            words.append(token[1:])
        elif key in FLAG_MODIFIERS:
            setting, value = FLAG_MODIFIERS[key]
            overrides[setting] = value
        elif key in VALUE_MODIFIERS:
            setting = VALUE_MODIFIERS[key]
            if i + 1 >= len(tokens) or not _is_whole_number(tokens[i + 1]):
                raise InvalidRequest(f"{token} needs a whole number after it, e.g. {token} 20")
            overrides[setting] = int(tokens[i + 1])
            i += 1
        else:
            _refuse_near_miss(token)
            words.append(token)
        i += 1
    return ParsedInput(" ".join(words), overrides)


def _refuse_near_miss(token: str) -> None:
    if not _SLASH_WORD.match(token):
        return
    key = token.lower()
    for name in (*FLAG_MODIFIERS, *VALUE_MODIFIERS):
        # short names (/1k, /2mp) allow one typo, or every 3-letter slash word would be one
        if edit_distance(key, name) <= (1 if len(name) <= 4 else 2):
            raise InvalidRequest(f"{token} is not a modifier: did you mean {name}? "
                                 f"(write /{token} to keep {token} in the prompt)")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute); the strings here are a few letters."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _is_whole_number(token: str) -> bool:
    return token.isascii() and token.isdigit()
