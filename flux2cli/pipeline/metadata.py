"""Reading generation parameters back out of PNG files: ours, and A1111-style ones.

``flux2 info IMAGE.png`` shows them and ``flux2 generate --from-image`` re-runs them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux2cli.errors import InvalidRequest

_PAIR = re.compile(r'\s*([\w ]+?):\s*("(?:\\.|[^"])*"|[^,]*)\s*(?:,|$)')


@dataclass(frozen=True)
class ImageParameters:
    source: str  # "flux2" | "a1111"
    prompt: str
    settings: dict[str, Any] = field(default_factory=dict)  # GenerationRequest.create keywords
    extra: dict[str, Any] = field(default_factory=dict)  # everything else that was stored


def read_parameters(path: str | Path) -> ImageParameters:
    from PIL import Image

    file = Path(path)
    try:
        with Image.open(file, formats=("PNG",)) as image:
            text = dict(getattr(image, "text", {}) or {})
    except FileNotFoundError:
        raise InvalidRequest(f"{file} does not exist") from None
    except Exception:
        raise InvalidRequest(f"{file.name} is not a readable PNG image") from None
    if "flux2" in text:
        return _from_flux2(text["flux2"], file.name)
    if "parameters" in text:
        return parse_a1111(text["parameters"])
    raise InvalidRequest(f"{file.name} holds no generation parameters (no 'flux2' or 'parameters' text chunk)")


def _from_flux2(raw: str, name: str) -> ImageParameters:
    try:
        data = json.loads(raw)
        prompt = data["prompt"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest(f"{name} has a damaged 'flux2' metadata chunk") from None
    settings = {key: data.get(key) for key in ("model", "steps", "seed", "guidance")}
    if data.get("orientation") and data.get("size"):
        settings.update(orientation=data["orientation"], size=data["size"])
    else:
        settings.update(width=data.get("width"), height=data.get("height"))
    extra = {k: v for k, v in data.items() if k not in settings and k != "prompt"}
    return ImageParameters("flux2", prompt, {k: v for k, v in settings.items() if v is not None}, extra)


def parse_a1111(text: str) -> ImageParameters:
    """``prompt\\n[Negative prompt: ...\\n]Steps: 20, Sampler: ..., Seed: 1, Size: 512x512, ...``."""
    lines = text.strip().splitlines()
    last = lines[-1] if lines else ""
    pairs = {key.strip(): value.strip().strip('"') for key, value in _PAIR.findall(last)} if "Steps:" in last else {}
    body = lines[:-1] if pairs else lines
    prompt_lines, negative = [], None
    for line in body:
        if line.startswith("Negative prompt:"):
            negative = line.split(":", 1)[1].strip()
        elif negative is None:
            prompt_lines.append(line)
    settings: dict[str, Any] = {}
    if pairs.get("Steps", "").isdigit():
        settings["steps"] = int(pairs["Steps"])
    if pairs.get("Seed", "").isdigit():
        settings["seed"] = int(pairs["Seed"])
    size = re.fullmatch(r"(\d+)x(\d+)", pairs.get("Size", ""))
    if size:
        settings.update(width=int(size.group(1)), height=int(size.group(2)))
    try:
        settings["guidance"] = float(pairs["CFG scale"])
    except (KeyError, ValueError):
        pass
    extra = {k: v for k, v in pairs.items() if k not in ("Steps", "Seed", "Size", "CFG scale")}
    if negative:
        extra["Negative prompt"] = negative
    return ImageParameters("a1111", "\n".join(prompt_lines).strip(), settings, extra)
