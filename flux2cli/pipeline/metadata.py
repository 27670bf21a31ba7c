"""Reading generation parameters back out of PNG files: ours, and A1111-style ones.

``flux2 info IMAGE.png`` shows them and ``flux2 generate --from-image`` re-runs them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux2cli.errors import InvalidRequest, UnknownModel
from flux2cli.pipeline.alternatives import escape_alternatives
from flux2cli.pipeline.fields import replayed
from flux2cli.pipeline.registry import DEFAULT_MODEL, MODELS, ModelSpec, get_model, resolve_model

_EXPLICIT, _NAMED = ("width", "height"), ("orientation", "size")
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
        return parse_flux2(text["flux2"], file.name)
    if "parameters" in text:
        return parse_a1111(text["parameters"])
    raise InvalidRequest(f"{file.name} holds no generation parameters (no 'flux2' or 'parameters' text chunk)")


def parse_flux2(raw: str, name: str) -> ImageParameters:
    """Our own 'flux2' chunk (``name`` is the file's, for the message when it is damaged)."""
    try:
        data = json.loads(raw)
        prompt = data["prompt"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest(f"{name} has a damaged 'flux2' metadata chunk") from None
    settings = {key: data.get(key) for key in ("model", *replayed())}
    # Dimensions go as a group: a named size, or an explicit width and height.
    for key in _EXPLICIT if data.get("orientation") and data.get("size") else _NAMED:
        settings.pop(key)
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
    used = {"Steps", "Seed", "Size", "CFG scale"}
    model = _registry_name(pairs.get("Model", ""))
    if model:  # our own chunk names the model by its display name; other tools' models stay in extra
        settings["model"] = model
        used.add("Model")
    extra = {k: v for k, v in pairs.items() if k not in used}
    if negative:
        extra["Negative prompt"] = negative
    return ImageParameters("a1111", "\n".join(prompt_lines).strip(), settings, extra)


def _registry_name(name: str) -> str | None:
    key = name.strip().lower()
    for spec in MODELS:
        if key and key in (spec.name, spec.display_name.lower(), *spec.aliases):
            return spec.name
    return None


# -- replay: `flux2 generate --from-image` ------------------------------------------------

@dataclass(frozen=True)
class Replay:
    """What ``GenerationRequest.create`` needs to re-run an image, after the user's overrides."""

    spec: ModelSpec
    prompt: str
    settings: dict[str, Any]  # orientation/size or width/height, steps, seed, batch, guidance
    strength: float | None
    notices: tuple[str, ...]


def plan_replay(stored: ImageParameters, given: dict[str, Any], *, prompt: str = "", model: str | None = None,
                full_model: bool = False, gguf: str | None = None, references: int = 0,
                strength: float | None = None, default_model: str = DEFAULT_MODEL) -> Replay:
    """The stored settings with every value the user gave (not None) put over them.

    Dimensions go as a group: a given orientation or size drops a stored width/height and
    the reverse, so the result never mixes the two ways of naming a size. A stored guidance
    is dropped for a guidance-distilled model (it was the other model's, not the user's).
    A stored strength applies only when reference images are given again.
    """
    given = {key: value for key, value in given.items() if value is not None}
    settings = dict(stored.settings)
    stored_model = settings.pop("model", None)
    stored_strength = settings.pop("strength", None)
    for group, other in ((_EXPLICIT, _NAMED), (_NAMED, _EXPLICIT)):
        if any(key in given for key in group):
            for key in other:
                settings.pop(key, None)
    settings.update(given)

    if model or full_model or gguf:
        spec = resolve_model(model, full_model=full_model, gguf=gguf)
    elif stored_model:
        try:
            spec = get_model(stored_model)
        except UnknownModel:
            raise InvalidRequest(f"the image was made with model {stored_model!r}, which this flux2 does not "
                                 "know; choose one with --model") from None
    else:
        spec = resolve_model(None, default=default_model)
    if spec.distilled and "guidance" not in given:
        settings.pop("guidance", None)
    if not spec.cfg and "negative_prompt" not in given:  # the other model's, which that model refuses
        settings.pop("negative_prompt", None)

    notices = []
    if stored.extra.get("reference_images") and not references:
        notices.append("the image was made with reference images; pass them again with --input-image to use them")
    if not references and settings.pop("expand", None) is not None:
        notices.append("the image was outpainted (expand); pass its input image again with --input-image to redo it")
    mask = stored.extra.get("mask")
    if isinstance(mask, dict):  # only its digest is stored, never the mask
        notices.append(f"the image was made with a {mask.get('width')}x{mask.get('height')} mask (sha256 "
                       f"{str(mask.get('sha256'))[:12]}…); pass the mask file again with --mask")
    if strength is None and references:
        strength = stored_strength
    # The stored prompt is the one the model saw: braces in it are text, not alternatives.
    return Replay(spec, prompt or escape_alternatives(stored.prompt), settings, strength, tuple(notices))


def replay_command(params: ImageParameters) -> str:
    """An equivalent `flux2 generate` command line, to copy and edit."""
    import shlex

    args = ["flux2", "generate", escape_alternatives(params.prompt)]
    for key in ("model", *replayed()):
        value = params.settings.get(key)
        # strength needs the reference images again, and they are not stored
        if key == "loras":  # --lora NAME:SCALE each; the files are found again by name
            args += [arg for item in value or () if isinstance(item, dict)
                     for arg in ("--lora", f"{item.get('name')}:{item.get('scale', 1.0):g}")]
            continue
        if value is not None and key != "strength" and not (key == "batch" and value == 1):
            args += [f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(args)
