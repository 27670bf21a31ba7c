"""Writing images and their ``.prompt`` sidecars: atomic, in the spec's exact format."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from flux2cli.pipeline.request import GenerationRequest

TEMP_PREFIX = ".flux2-"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 600


@dataclass(frozen=True)
class SavedImage:
    path: Path
    sidecar: Path
    seed: int
    timings: dict[str, float]  # encoding, diffusion, save, total

    @property
    def filename(self) -> str:
        return self.path.name


def new_filename(now: datetime | None = None) -> str:
    now = now or datetime.now()
    return f"flux2_{now:%Y%m%d}_{now:%H%M%S}_{uuid.uuid4().hex[:8]}.png"


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(file)`` into a temp file beside ``path``, then rename.

    A crash or an error leaves either the old state or the whole new file, never half.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def clean_stale_temp_files(folder: Path, max_age: float = STALE_TEMP_SECONDS) -> int:
    """Remove temp files a killed process left behind; returns how many."""
    removed = 0
    cutoff = time.time() - max_age
    for leftover in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _one_line(text: str) -> str:
    return " ".join(text.split())


def sidecar_text(request: GenerationRequest, seed: int, timings: dict[str, float]) -> str:
    raw = request.raw_input if request.raw_input is not None else request.prompt
    return (
        f"# Raw input: {_one_line(raw)}\n"
        f"# Prompt: {_one_line(request.prompt)}\n"
        f"# Dimensions: {request.width}x{request.height}\n"
        f"# Seed: {seed}\n"
        f"# Steps: {request.steps}\n"
        f"# Timings: encoding={timings['encoding']:.2f}s, diffusion={timings['diffusion']:.2f}s, "
        f"save={timings['save']:.2f}s\n"
    )


def a1111_parameters(request: GenerationRequest, seed: int, model_name: str) -> str:
    """The ``parameters`` text chunk in the form A1111-style readers parse."""
    fields = [f"Steps: {request.steps}", "Sampler: Euler (flow matching)"]
    if request.guidance is not None:
        fields.append(f"CFG scale: {request.guidance:g}")
    fields += [f"Seed: {seed}", f"Size: {request.width}x{request.height}", f"Model: {model_name}"]
    if request.strength is not None:
        fields.append(f"Denoising strength: {request.strength:g}")
    return f"{request.prompt}\n{', '.join(fields)}"


def save_image(
    image: Any,
    request: GenerationRequest,
    *,
    seed: int,
    timings: dict[str, float],
    output_dir: Path,
    model_name: str,
) -> SavedImage:
    """Save one PNG with its metadata and sidecar; ``timings`` has encoding and diffusion."""
    from PIL.PngImagePlugin import PngInfo

    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / new_filename()
    start = time.perf_counter()
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(request, seed, model_name))
    metadata = {**request.to_metadata(), "seed": seed, "model_name": model_name,
                "timings": {k: round(v, 4) for k, v in timings.items()}}
    info.add_text("flux2", json.dumps(metadata, ensure_ascii=False))
    atomic_write(path, lambda handle: image.save(handle, format="PNG", pnginfo=info))
    save_seconds = time.perf_counter() - start

    full = {"encoding": timings["encoding"], "diffusion": timings["diffusion"], "save": save_seconds}
    full["total"] = full["encoding"] + full["diffusion"] + save_seconds
    sidecar = path.with_suffix(".prompt")
    text = sidecar_text(request, seed, full).encode("utf-8")
    try:
        atomic_write(sidecar, lambda handle: handle.write(text))
    except BaseException:
        path.unlink(missing_ok=True)  # the pair lands whole or not at all
        raise
    return SavedImage(path=path, sidecar=sidecar, seed=seed, timings=full)


def generation_body(saved: list[SavedImage], generation_time: float) -> dict[str, Any]:
    """The spec's ``POST /generate`` success body; `flux2 generate --json` prints it too."""
    return {
        "success": True,
        "images": [{"filename": s.filename, "seed": s.seed,
                    "timings": {k: round(v, 3) for k, v in s.timings.items()}} for s in saved],
        "generation_time": round(generation_time, 3),
    }
