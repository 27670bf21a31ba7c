"""flux2cli: FLUX.2 image generation from a terminal, a browser and Python.

``load_model`` and ``generate_image`` are imported on first use, so ``import flux2cli``
(and with it ``flux2 --help``) does not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model", "generate_image", "__version__"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("flux2cli")
except Exception:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def __getattr__(name: str) -> Any:
    if name in ("load_model", "generate_image"):
        from flux2cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'flux2cli' has no attribute {name!r}")
