"""Environment variables flux2cli reads, and the folders it uses.

Every ``FLUX2_*`` variable is listed here once, so ``flux2 info`` and the docs can show
them and nothing else reads the environment on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VARS: dict[str, str] = {
    "FLUX2_MODEL": "default model name (see `flux2 info`)",
    "FLUX2_OUTPUT_DIR": "folder for generated images (default ./outputs)",
    "FLUX2_HOME": "folder for history and settings (default: the user data folder)",
    "FLUX2_DEBUG": "set to 1 to show tracebacks",
    "FLUX2_API_KEY": "API key `flux2 serve` requires (Authorization: Bearer KEY or X-API-Key: KEY)",
    "FLUX2_ENCODER_URL": "remote text encoder endpoint for FLUX.2 [dev] (default: the public one, if reachable)",
    "FLUX2_ENCODER_TOKEN": "bearer token sent to a non-Hugging Face encoder endpoint (its --api-key)",
}

DEFAULT_OUTPUT_DIR = "outputs"


def debug_enabled() -> bool:
    return os.environ.get("FLUX2_DEBUG", "").strip() not in ("", "0", "false", "no")


def home_dir() -> Path:
    explicit = os.environ.get("FLUX2_HOME")
    if explicit:
        return Path(explicit).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("flux2cli", appauthor=False))


def hf_hub_cache() -> Path:
    """The Hugging Face cache folder, resolved as huggingface_hub does, without importing it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def is_repo_cached(repo: str) -> bool:
    snapshots = hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())
