"""Inline modifiers: ``a sunset /4k /portrait`` → prompt "a sunset" + settings.

Shared by the REPL and ``flux2 generate``. A ``/word`` that is not a modifier stays in
the prompt text (prompts may well contain slashes: "AC/DC", "1/2 moon").
"""

from __future__ import annotations

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
        if key in FLAG_MODIFIERS:
            setting, value = FLAG_MODIFIERS[key]
            overrides[setting] = value
        elif key in VALUE_MODIFIERS:
            setting = VALUE_MODIFIERS[key]
            if i + 1 >= len(tokens) or not _is_whole_number(tokens[i + 1]):
                raise InvalidRequest(f"{token} needs a whole number after it, e.g. {token} 20")
            overrides[setting] = int(tokens[i + 1])
            i += 1
        else:
            words.append(token)
        i += 1
    return ParsedInput(" ".join(words), overrides)


def _is_whole_number(token: str) -> bool:
    return token.isascii() and token.isdigit()
