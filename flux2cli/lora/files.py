"""LoRA files: where they come from, what their headers say, and the catalog of available names.

Everything here is pure Python (json, hashlib, pathlib): ``flux2 info`` lists a LoRA folder
and ``GET /loras`` describes files without importing torch. The safetensors header is read
by hand (8-byte length + JSON) for that reason; tensors are loaded by ``formats.load_file``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.lora.refs import NAME_CHARS, LoraRef, valid_name

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "loras"
SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 64 * 1024 * 1024  # the header of a 2 GB LoRA is about 1 MB
# owner/name or owner/name/path/in/repo.safetensors, as the hub spells repositories
_HUB = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+\.safetensors)?$")


def parse_source(text: str) -> tuple[str, float]:
    """``SOURCE[:SCALE]`` -> (source, scale); a tail that is not a number belongs to the source."""
    source, sep, tail = text.rpartition(":")
    if sep and source:
        try:
            return source, float(tail)
        except ValueError:
            pass
    if not text.strip():
        raise InvalidRequest("--lora needs a file, folder, hub repo or shipped name, e.g. --lora tiny-colours:0.8")
    return text, 1.0


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors header: {key: {"dtype", "shape", ...}, "__metadata__": {...}}."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise ValueError("too short")
            (length,) = struct.unpack("<Q", raw)
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise ValueError("bad header length")
            header = json.loads(handle.read(length))
            if not isinstance(header, dict):
                raise ValueError("header is not an object")
            return header
    except OSError as error:
        raise InvalidRequest(f"LoRA file {path.name} cannot be read ({error.strerror or error})") from None
    except ValueError:
        raise InvalidRequest(f"{path.name} is not a safetensors file") from None


def shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.get("shape", ())) for key, value in header.items()
            if key != "__metadata__" and isinstance(value, dict)}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def name_for(path: Path) -> str:
    """A LoRA's name: its file stem, cut to a valid name (folders of diffusers exports use theirs)."""
    stem = path.stem
    if stem in ("pytorch_lora_weights", "adapter_model", "diffusion_pytorch_model") and path.parent.name:
        stem = path.parent.name
    name = re.sub(r"[^A-Za-z0-9_.+-]", "-", stem).lstrip(".-")[:NAME_CHARS]
    return name if valid_name(name) else "lora"


def _one_file(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.suffix == SUFFIX and p.is_file())
    preferred = [p for p in files if p.name in ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")]
    if preferred:
        return preferred[0]
    if len(files) == 1:
        return files[0]
    if not files:
        raise InvalidRequest(f"{folder} holds no .safetensors file")
    names = ", ".join(p.name for p in files[:5])
    raise InvalidRequest(f"{folder} holds {len(files)} .safetensors files ({names}); name one of them")


def shipped() -> dict[str, Path]:
    """The LoRAs that come with flux2cli (flux2cli/loras/NAME.safetensors)."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {path.stem: path for path in sorted(SHIPPED_DIR.glob(f"*{SUFFIX}"))}


def resolve_source(source: str, lora_dir: Path | None = None) -> Path:
    """A file, a folder (its one LoRA file), a name in ``lora_dir`` or shipped, or a hub repo.

    Hub repos are fetched with huggingface_hub (its cache and its offline mode apply).
    """
    text = source.strip().strip("'\"")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _one_file(path)
    if valid_name(text):
        for folder in (lora_dir, SHIPPED_DIR):
            if folder is not None and (Path(folder) / f"{text}{SUFFIX}").is_file():
                return Path(folder) / f"{text}{SUFFIX}"
    if _HUB.match(text):
        return _from_hub(text)
    if text.endswith(SUFFIX) or "/" in text or "\\" in text:
        raise InvalidRequest(f"LoRA {text!r} does not exist")
    known = ", ".join(sorted(available(lora_dir))) or "none"
    raise InvalidRequest(f"no LoRA named {text!r} (a file, folder, hub repo owner/name or one of: {known})")


def _from_hub(text: str) -> Path:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    owner, name, *rest = text.split("/")
    repo = f"{owner}/{name}"
    try:
        if rest:
            return Path(hf_hub_download(repo, "/".join(rest)))
        try:
            files = [f for f in HfApi().list_repo_files(repo) if f.endswith(SUFFIX)]
        except Exception:  # offline: whatever the cache holds for this repo
            from huggingface_hub import snapshot_download

            return _one_file(Path(snapshot_download(repo, allow_patterns=[f"*{SUFFIX}"], local_files_only=True)))
        if len(files) != 1:
            if not files:
                raise InvalidRequest(f"hub repo {repo} holds no .safetensors file")
            raise InvalidRequest(f"hub repo {repo} holds {len(files)} .safetensors files; name one, e.g. "
                                 f"{repo}/{files[0]}")
        return Path(hf_hub_download(repo, files[0]))
    except InvalidRequest:
        raise
    except LocalEntryNotFoundError:
        raise InvalidRequest(f"LoRA {text!r} is not in the hub cache and the hub cannot be reached "
                             "(HF_HUB_OFFLINE or no network)") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", "?")
        raise InvalidRequest(f"hub LoRA {text!r} cannot be fetched (HTTP {status}); check the name and access") from None
    except Exception as error:  # a missing repo or file, read offline, raises several kinds
        raise InvalidRequest(f"hub LoRA {text!r} cannot be found ({type(error).__name__})") from None


def available(lora_dir: Path | None = None) -> dict[str, Path]:
    """Name -> file for the shipped LoRAs and those in ``lora_dir`` (the folder wins on a clash)."""
    found = dict(shipped())
    if lora_dir is not None and Path(lora_dir).is_dir():
        for path in sorted(Path(lora_dir).glob(f"*{SUFFIX}")):
            if path.is_file() and valid_name(path.stem):
                found[path.stem] = path
    return found


@dataclass
class LoraFile:
    name: str
    path: Path
    _sha256: str | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256(self.path)
        return self._sha256

    def describe(self) -> dict[str, Any]:
        """Name, the family the file was made for, its rank and format (header only: no torch)."""
        from flux2cli.lora.formats import describe_keys

        try:
            info = describe_keys(shapes(read_header(self.path)))
        except InvalidRequest as error:
            info = {"family": "unreadable", "rank": None, "format": None, "error": str(error)}
        return {"name": self.name, **info}


class LoraCatalog:
    """The LoRAs a front end makes available, by name: the shipped ones, a --lora-dir folder,
    and each --lora / /lora source (which may be a path: only front ends add those)."""

    def __init__(self, lora_dir: Path | None = None):
        self.lora_dir = Path(lora_dir) if lora_dir is not None else None
        self._files: dict[str, LoraFile] = {name: LoraFile(name, path) for name, path in available(lora_dir).items()}

    def names(self) -> list[str]:
        return sorted(self._files)

    def get(self, name: str) -> LoraFile:
        try:
            return self._files[name]
        except KeyError:
            shown = ", ".join(self.names()) or "none"
            raise InvalidRequest(f"no LoRA named {name!r} is available (available: {shown})",
                                 field="loras") from None

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def add(self, source: str) -> LoraFile:
        """Resolve a source and make it available under its name; the same file keeps its name."""
        path = resolve_source(source, self.lora_dir)
        for entry in self._files.values():
            if entry.path.resolve() == path.resolve():
                return entry
        name = base = name_for(path)
        counter = 2
        while name in self._files:
            name = f"{base}-{counter}"[:NAME_CHARS]
            counter += 1
        self._files[name] = LoraFile(name, path)
        return self._files[name]

    def add_refs(self, sources: list[str] | tuple[str, ...]) -> list[LoraRef]:
        """``--lora SOURCE[:SCALE]`` values -> the refs a request names them by."""
        refs = []
        for text in sources:
            source, scale = parse_source(text)
            refs.append(LoraRef(self.add(source).name, scale))
        return refs

    def find_sha256(self, digest: str) -> LoraFile | None:
        for entry in self._files.values():
            if entry.sha256 == digest:
                return entry
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [self._files[name].describe() for name in self.names()]
