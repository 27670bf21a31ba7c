"""``LoraRef``: a LoRA named in a request, with its scale; pure Python (fields.py imports it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_LORAS = 8
MAX_SCALE = 8.0  # |scale|; far beyond any useful value, but a bound keeps typos (80) out
NAME_CHARS = 64
# A name is a plain file stem: no separators, no leading dot, so it can never be a path.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def valid_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".." not in name


@dataclass(frozen=True)
class LoraRef:
    name: str
    scale: float = 1.0
    sha256: str | None = None  # filled in by the engine from the file it loaded

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "scale": self.scale}
        if self.sha256:
            data["sha256"] = self.sha256
        return data

    @property
    def tag(self) -> str:
        """A1111's prompt syntax, which other tools read: ``<lora:name:0.8>``."""
        return f"<lora:{self.name}:{self.scale:g}>"
