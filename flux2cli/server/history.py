"""The output folder as the server shows it: ``GET /history`` and ``GET /images/{filename}``.

Both read the folder itself, so images that earlier runs of the server (or ``flux2 generate``
into the same folder) wrote there are shown and served after a restart. A file is one of
ours only if all of these hold: its name is ``flux2_YYYYMMDD_HHMMSS_xxxxxxxx.png``, it is a
regular file directly in the folder (opened with O_NOFOLLOW: a symlink is refused, even one
swapped in after the listing), and it is a PNG carrying our ``flux2`` metadata chunk. Any
other name, link, folder or file answers the same 404 and is never listed.

Cost: a request lists the folder's names once (no stat, no reads), sorts them (the name
starts with the time it was written, so name order is time order) and opens only the files
of the page it answers, reading each up to its first pixel data, where our chunk lies.
"""

from __future__ import annotations

import asyncio
import bisect
import io
import os
import re
import stat
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from aiohttp import web

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.metadata import ImageParameters, parse_flux2
from flux2cli.server.responses import json_response
from flux2cli.server.state import CONFIG

# output.new_filename's names; [0-9], not \d, which in Python also matches other scripts' digits
IMAGE_NAME_PATTERN = r"^flux2_([0-9]{8})_([0-9]{6})_[0-9a-f]{8}\.png$"
IMAGE_NAME = re.compile(IMAGE_NAME_PATTERN)
DEFAULT_LIMIT = 24
MAX_LIMIT = 100
# Files a page may open beyond its images: matching names without our chunk are skipped, but a
# folder full of them must not make one request read thousands of files. A page cut short by
# this still names the next one, so a client reads on.
EXTRA_READS = 32


async def history(request: web.Request) -> web.Response:
    """GET /history?limit=N&before=FILENAME: the newest images first, with their stored settings."""
    limit = _limit(request.query.get("limit"))
    before = request.query.get("before")
    if before is not None and not IMAGE_NAME.fullmatch(before):
        raise InvalidRequest("before must be an image's file name, as a page's next gives it "
                             "(flux2_YYYYMMDD_HHMMSS_xxxxxxxx.png)", field="before")
    images, following = await asyncio.to_thread(read_page, Path(request.app[CONFIG].output_dir), limit, before)
    return json_response({"success": True, "images": images, "next": following})


async def image(request: web.Request) -> web.Response:
    """GET /images/{filename}: one of our images in the output folder; every other name is the same 404."""
    name = request.match_info["filename"]
    if not IMAGE_NAME.fullmatch(name):
        raise web.HTTPNotFound()
    data = await asyncio.to_thread(_read_ours, Path(request.app[CONFIG].output_dir) / name)
    if data is None:
        raise web.HTTPNotFound()
    return web.Response(body=data, content_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400, immutable",
                                 "X-Content-Type-Options": "nosniff"})


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= MAX_LIMIT:
        shown = text if len(text) <= 12 else text[:12] + "…"
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT} (got {shown!r})", field="limit")
    return int(text)


def read_page(folder: Path, limit: int, before: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` images older than ``before`` (all, without it), newest first, and the
    ``before`` of the next page (None when nothing older is left)."""
    names = _names(folder)  # oldest first
    end = bisect.bisect_left(names, before) if before is not None else len(names)
    images: list[dict[str, Any]] = []
    reads = 0
    while end > 0 and len(images) < limit and reads < limit + EXTRA_READS:
        end -= 1
        reads += 1
        entry = _entry(folder / names[end])
        if entry is not None:
            images.append(entry)
    return images, (names[end] if end > 0 else None)


def _names(folder: Path) -> list[str]:
    """Our image names in the folder, sorted; a symlink or folder (known without a stat) is left out."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entry.name for entry in entries
                          if IMAGE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False))
    except OSError:
        return []


def _entry(path: Path) -> dict[str, Any] | None:
    """What /history says about one image, or None when it is not one of ours."""
    with _open_regular(path) as handle:
        params = _our_parameters(handle, path.name) if handle is not None else None
    if params is None:
        return None
    settings = params.settings
    return {
        "filename": path.name,
        "url": f"/images/{path.name}",
        "created": _created(path.name),
        "prompt": params.prompt,
        "seed": settings.get("seed"),
        "settings": settings,  # what GenerationRequest.create takes, as replay restores it
        "model_name": params.extra.get("model_name"),
        "timings": params.extra.get("timings") or {},
        # Reference images and the mask are named only by count: the chunk of an image made by
        # `flux2 generate` holds local paths, which a web client must not see.
        "reference_images": len(params.extra.get("reference_images") or ()),
        "masked": bool(params.extra.get("mask")),
    }


def _created(name: str) -> str | None:
    """When the image was written, from its name, in the server's local time (None if the
    digits are no date: the pattern cannot say so)."""
    day, time = IMAGE_NAME.fullmatch(name).groups()  # type: ignore[union-attr]
    try:
        return datetime.strptime(day + time, "%Y%m%d%H%M%S").isoformat()
    except ValueError:
        return None


@contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO | None]:
    """The file opened for reading if it is a regular file (O_NOFOLLOW refuses a symlink,
    O_NONBLOCK does not hang on a FIFO), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        yield None
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder
        os.close(fd)
        yield None
        return
    with os.fdopen(fd, "rb") as handle:
        yield handle


def _our_parameters(handle: BinaryIO, name: str) -> ImageParameters | None:
    """The settings in our ``flux2`` chunk, read without decoding pixels; None for any other file."""
    from PIL import Image

    try:
        with Image.open(handle, formats=("PNG",)) as png:
            raw = png.info.get("flux2")  # text chunks before the pixel data: all ours are there
            if not isinstance(raw, str):
                return None
            params = parse_flux2(raw, name)
    except Exception:  # not a PNG, truncated, a damaged chunk: not one of ours
        return None
    return params if isinstance(params.prompt, str) else None


def _read_ours(path: Path) -> bytes | None:
    """The file's bytes if it is a regular file carrying our chunk."""
    with _open_regular(path) as handle:
        data = handle.read() if handle is not None else None
    if data is None or _our_parameters(io.BytesIO(data), path.name) is None:
        return None
    return data
