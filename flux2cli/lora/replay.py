"""Replay: the LoRAs an image records, found again by name (or by their sha256) in a catalog."""

from __future__ import annotations

from typing import Any

from flux2cli.lora.files import LoraCatalog
from flux2cli.lora.refs import LoraRef, valid_name


def restore(stored: Any, catalog: LoraCatalog) -> tuple[list[LoraRef], list[str]]:
    """The refs to use again and one notice per LoRA that is missing or has changed."""
    refs: list[LoraRef] = []
    notices: list[str] = []
    for item in stored if isinstance(stored, list) else []:
        if not isinstance(item, dict) or not valid_name(item.get("name")):
            continue
        name, digest = item["name"], item.get("sha256")
        try:
            scale = float(item.get("scale", 1.0))
        except (TypeError, ValueError):
            scale = 1.0
        entry = None
        if name in catalog:
            entry = catalog.get(name)
        elif digest:
            entry = catalog.find_sha256(digest)
        if entry is None:
            notices.append(f"the image used LoRA {name!r} (scale {scale:g}), which is not available here; "
                           "put it in --lora-dir or pass --lora FILE")
            continue
        if digest and entry.sha256 != digest:
            notices.append(f"LoRA {name!r} here is not the file the image used (another sha256); using it anyway")
        refs.append(LoraRef(entry.name, scale))
    return refs, notices
