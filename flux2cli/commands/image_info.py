"""`flux2 info IMAGE.png`: the generation parameters stored in an image, and how to re-run them."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import typer

from flux2cli.pipeline.metadata import ImageParameters, read_parameters, replay_command

_LABELS = {"flux2": "flux2 metadata", "a1111": "A1111-style parameters"}
_ORDER = ("model", "orientation", "size", "width", "height", "steps", "seed", "batch", "guidance")


def image_report(path: Path, params: ImageParameters) -> dict[str, Any]:
    return {"file": str(path), "source": params.source, "prompt": params.prompt, "settings": params.settings,
            "extra": params.extra, "command": replay_command(params),
            "replay": shlex.join(["flux2", "generate", "--from-image", str(path)])}


def show_image_parameters(path: Path, json_output: bool) -> None:
    report = image_report(path, read_parameters(path))
    if json_output:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{path}: {_LABELS[report['source']]}")
    rows = [("prompt", report["prompt"])]
    rows += [(key, report["settings"][key]) for key in _ORDER if key in report["settings"]]
    rows += [(key.replace("_", " "), value) for key, value in report["extra"].items() if value not in (None, [], "")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        text = _text(value, " s" if name == "timings" else "")
        typer.echo(f"  {name:<{width}}  {' '.join(text.split()) if name != 'prompt' else text}")
    typer.echo(f"re-run:  {report['replay']}")
    typer.echo(f"or edit: {report['command']}")


def _text(value: Any, unit: str = "") -> str:
    """A stored value as words: {"encoding": 1.07, ...} is "encoding 1.07 s, ...", not JSON."""
    if isinstance(value, dict):
        return ", ".join(f"{key.replace('_', ' ')} {_text(item, unit)}" for key, item in value.items())
    if isinstance(value, list):
        return "; ".join(_text(item, unit) for item in value)
    if isinstance(value, float) and unit:
        return f"{value:.2f}{unit}"
    return f"{value}{unit}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
