"""Writing images and their ``.prompt`` sidecars: atomic, crash-consistent, in the spec's format.

A PNG and its sidecar land as a pair: both are written to temporary files, the sidecar is
renamed into place first and the PNG last, so a PNG in the folder always has its sidecar.
A process killed between the two renames leaves a sidecar and the PNG's temporary file;
``recover_output_dir`` (run when a server starts) removes both, so a restart leaves only
whole pairs. Temporary names carry the writer's process id and the final name for that.

Files are created with mode 0666 minus the umask, like any file a program writes; a
shared machine that wants them private sets ``umask 077`` (docs/server.md).
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from flux2cli.errors import OutputFolderError, StorageError, StorageFull
from flux2cli.pipeline.request import GenerationRequest

TEMP_PREFIX = ".flux2-"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 600  # a live writer's temp file older than this is abandoned all the same
# .flux2-<pid>-<random>-<final name>.tmp; the old mkstemp names (.flux2-<random>.tmp) match too.
_TEMP_NAME = re.compile(rf"{re.escape(TEMP_PREFIX)}(?:(\d+)-[0-9a-f]{{8}}-(.+)|[^/]*){re.escape(TEMP_SUFFIX)}")


@dataclass(frozen=True)
class SavedImage:
    path: Path
    sidecar: Path
    seed: int
    timings: dict[str, float]  # encoding, diffusion, save, total
    evaluations: dict[str, Any] | None = None  # step caching's work report (step_cache.Counter.report)

    @property
    def filename(self) -> str:
        return self.path.name


class Generated(Protocol):
    """What ``save_images`` needs of each generated image (the engine's ``GeneratedImage``)."""

    image: Any
    seed: int
    timings: dict[str, float]
    # and, optionally, ``evaluations``: step caching's report (the engine's results carry it)


def new_filename(now: datetime | None = None) -> str:
    now = now or datetime.now()
    return f"flux2_{now:%Y%m%d}_{now:%H%M%S}_{uuid.uuid4().hex[:8]}.png"


def storage_error(error: OSError) -> StorageError:
    """One line naming the real cause, without the path (server answers never show local paths)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("the disk of the output folder is full (or over quota); free some space and try again")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError("cannot write to the output folder: permission denied (or a read-only file system)")
    if error.errno == errno.EMFILE:
        return StorageError("cannot write the image: this process has too many open files")
    reason = os.strerror(error.errno) if error.errno else type(error).__name__
    return StorageError(f"cannot write the image to the output folder ({reason})")


def _temp_for(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}{TEMP_SUFFIX}")


def _write_temp(path: Path, write: Callable[[Any], None]) -> Path:
    """Write through ``write(file)`` into a new temp file beside ``path``; returns the temp path.

    Opened with O_EXCL and mode 0666, so the kernel applies the umask (mkstemp's 0600 would
    not), without the process-wide os.umask() dance that races with other threads.
    """
    tmp = _temp_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(file)`` into a temp file beside ``path``, then rename.

    A crash or an error leaves either the old state or the whole new file, never half.
    """
    tmp = _write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def recover_output_dir(folder: Path, max_age: float = STALE_TEMP_SECONDS) -> int:
    """Remove what writers killed mid-save left behind; returns how many files.

    A temp file goes when its writer is gone (or it is older than ``max_age``); when it was
    a PNG whose sidecar was already renamed into place, that orphan sidecar goes with it.
    Temp files of a live writer (another ``flux2`` saving into the same folder) stay.
    """
    removed = 0
    cutoff = time.time() - max_age
    for leftover in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        match = _TEMP_NAME.fullmatch(leftover.name)
        if match is None:
            continue
        pid, final = match.group(1), match.group(2)
        try:
            if pid is not None and _writer_alive(int(pid)) and leftover.stat().st_mtime >= cutoff:
                continue
            if pid is None and leftover.stat().st_mtime >= cutoff:
                continue
            leftover.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        png = folder / final if final and final.endswith(".png") else None
        if png is not None and not png.exists():
            try:
                png.with_suffix(".prompt").unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def prepare_output_dir(path: str | Path) -> Path:
    """Create the output folder if needed and prove it is writable, before anything slow.

    Every failure is one ``OutputFolderError`` line naming the folder and what is wrong, so
    `flux2 generate -o a_file` fails at once instead of after generating.
    """
    folder = Path(path).expanduser()
    shown = str(path)
    try:
        if folder.is_symlink() and not os.path.exists(folder):
            os.stat(folder)  # ELOOP for a loop; ENOENT for a link to nothing
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise OutputFolderError(f"output folder {shown!r} is not a folder")
        probe = folder / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-probe{TEMP_SUFFIX}"
        # Creating a file is the only honest test: os.access ignores read-only mounts and ACLs.
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OutputFolderError:
        raise
    except FileExistsError:
        raise OutputFolderError(f"output folder {shown!r} is a file, not a folder; pick another -o") from None
    except OSError as error:
        raise OutputFolderError(f"output folder {shown!r} cannot be used: {_folder_reason(folder, error)}; "
                                f"pick another -o") from None
    return folder


def _folder_reason(folder: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "it is a loop of symbolic links"
    if error.errno == errno.ENOENT and folder.is_symlink():
        return "it is a symbolic link to nothing"
    if error.errno == errno.ENOTDIR:
        return "a part of the path is a file"
    if error.errno == errno.ENAMETOOLONG:
        return "the name is too long"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "it is not writable (permission denied or read-only)"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "its disk is full"
    return os.strerror(error.errno) if error.errno else type(error).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def sidecar_text(request: GenerationRequest, seed: int, timings: dict[str, float],
                 evaluations: dict[str, Any] | None = None) -> str:
    raw = request.raw_input if request.raw_input is not None else request.prompt
    # The spec's lines, then (only when a step cache ran) how much transformer work it skipped.
    cached = "" if not _cached(evaluations) else (
        f"# Cache: {evaluations['cache']}, {evaluations['full_evaluations']} full transformer evaluations "
        f"of {evaluations['transformer_calls']} calls ({evaluations['steps']} steps)\n")
    return (
        f"# Raw input: {_one_line(raw)}\n"
        f"# Prompt: {_one_line(request.prompt)}\n"
        f"# Dimensions: {request.width}x{request.height}\n"
        f"# Seed: {seed}\n"
        f"# Steps: {request.steps}\n"
        f"# Timings: encoding={timings['encoding']:.2f}s, diffusion={timings['diffusion']:.2f}s, "
        f"save={timings['save']:.2f}s\n"
        f"{cached}"
    )


def a1111_parameters(request: GenerationRequest, seed: int, model_name: str) -> str:
    """The ``parameters`` text chunk in the form A1111-style readers parse."""
    fields = [f"Steps: {request.steps}", "Sampler: Euler (flow matching)"]
    if request.guidance is not None:
        fields.append(f"CFG scale: {request.guidance:g}")
    fields += [f"Seed: {seed}", f"Size: {request.width}x{request.height}", f"Model: {model_name}"]
    if request.strength is not None:
        fields.append(f"Denoising strength: {request.strength:g}")
    tags = "".join(f" {ref.tag}" for ref in request.loras or ())  # how A1111-style tools name LoRAs
    return f"{request.prompt}{tags}\n{', '.join(fields)}"


def save_image(
    image: Any,
    request: GenerationRequest,
    *,
    seed: int,
    timings: dict[str, float],
    output_dir: Path,
    model_name: str,
    evaluations: dict[str, Any] | None = None,
) -> SavedImage:
    """Save one PNG with its metadata and sidecar; ``timings`` has encoding and diffusion.

    Raises ``StorageError`` (``StorageFull`` for a full disk) when the folder refuses the
    files; nothing of the pair is left behind then.
    """
    try:
        return _save_pair(image, request, seed=seed, timings=timings, output_dir=Path(output_dir),
                          model_name=model_name, evaluations=evaluations)
    except OSError as error:
        raise storage_error(error) from error


def _save_pair(image: Any, request: GenerationRequest, *, seed: int, timings: dict[str, float],
               output_dir: Path, model_name: str, evaluations: dict[str, Any] | None = None) -> SavedImage:
    from PIL.PngImagePlugin import PngInfo

    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / new_filename()
    sidecar = path.with_suffix(".prompt")
    start = time.perf_counter()
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(request, seed, model_name))
    metadata = {**request.to_metadata(), "seed": seed, "model_name": model_name,
                "timings": {k: round(v, 4) for k, v in timings.items()}}
    if evaluations:
        metadata["evaluations"] = evaluations
    info.add_text("flux2", json.dumps(metadata, ensure_ascii=False))
    png_tmp = _write_temp(path, lambda handle: image.save(handle, format="PNG", pnginfo=info))
    sidecar_placed = False
    try:
        save_seconds = time.perf_counter() - start
        full = {"encoding": timings["encoding"], "diffusion": timings["diffusion"], "save": save_seconds}
        full["total"] = full["encoding"] + full["diffusion"] + save_seconds
        text = sidecar_text(request, seed, full, evaluations).encode("utf-8")
        sidecar_tmp = _write_temp(sidecar, lambda handle: handle.write(text))
        try:
            os.replace(sidecar_tmp, sidecar)  # sidecar first: a PNG never appears without it
        except BaseException:
            sidecar_tmp.unlink(missing_ok=True)
            raise
        sidecar_placed = True
        os.replace(png_tmp, path)
    except BaseException:
        png_tmp.unlink(missing_ok=True)
        if sidecar_placed:
            sidecar.unlink(missing_ok=True)  # the pair lands whole or not at all
        raise
    return SavedImage(path=path, sidecar=sidecar, seed=seed, timings=full, evaluations=evaluations)


def remove_saved(saved: Iterable[SavedImage]) -> None:
    """Take back pairs already written (PNG first, so no PNG is ever left without its sidecar)."""
    for item in saved:
        item.path.unlink(missing_ok=True)
        item.sidecar.unlink(missing_ok=True)


def save_images(results: Iterable[Generated], request: GenerationRequest, *, output_dir: Path,
                model_name: str) -> list[SavedImage]:
    """Save a whole batch or nothing: when image k cannot be saved, images 1..k-1 are removed
    again, so a failed request never leaves files that no answer named. The results come in
    the order of ``request.seeds``: with prompt alternatives, each records its own prompt."""
    saved: list[SavedImage] = []
    variants = request.variants()
    try:
        for index, result in enumerate(results):
            own = variants[index // request.batch] if request.alternatives else request
            saved.append(save_image(result.image, own, seed=result.seed, timings=result.timings,
                                    output_dir=output_dir, model_name=model_name,
                                    evaluations=getattr(result, "evaluations", None)))
    except BaseException:
        remove_saved(saved)
        raise
    return saved


def _cached(evaluations: dict[str, Any] | None) -> bool:
    return bool(evaluations) and evaluations.get("cache", "off") != "off"


def generation_body(saved: list[SavedImage], generation_time: float) -> dict[str, Any]:
    """The spec's ``POST /generate`` success body; `flux2 generate --json` prints it too."""
    return {
        "success": True,
        # "evaluations" is an addition to the spec's body (step caching's work report), sent only
        # when a cache ran, so the body is exactly the spec's by default.
        "images": [{"filename": s.filename, "seed": s.seed,
                    "timings": {k: round(v, 3) for k, v in s.timings.items()},
                    **({"evaluations": s.evaluations} if _cached(s.evaluations) else {})} for s in saved],
        "generation_time": round(generation_time, 3),
    }
