"""flux2cli: FLUX.2 image generation from a terminal, a browser and Python.

``load_model`` and ``generate_image`` are imported on first use, so ``import flux2cli``
(and with it ``flux2 --help``) does not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model", "generate_image", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "generate_image"):
        from flux2cli import api

        return getattr(api, name)
    if name == "__version__":  # importlib.metadata costs ~40 ms at start-up
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("flux2cli")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0.0.0"
    raise AttributeError(f"module 'flux2cli' has no attribute {name!r}")
