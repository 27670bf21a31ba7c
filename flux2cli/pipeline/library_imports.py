"""Importing a model's diffusers pipeline without bitsandbytes when the model has no bitsandbytes weights.

Why: importing any diffusers pipeline imports diffusers' model layer, which imports every
quantizer backend, and two modules on that path import bitsandbytes as soon as it is
installed: diffusers' ``quantizers/bitsandbytes/utils.py`` (``if is_bitsandbytes_available():
import bitsandbytes as bnb``) and peft's ``helpers.py`` (``try: import bitsandbytes as bnb``;
diffusers imports peft for its LoRA backend). bitsandbytes in turn imports much of
``torch._inductor``: about a second of every ``flux2 generate`` on a CPU (docs/performance.md,
"Cold start") for a model that never touches it. diffusers has no switch for this and no
narrower import path, and ``importlib.util.LazyLoader`` cannot defer it: a lazy module in
``sys.modules`` is loaded by the next ``import`` statement that names it (the import system
reads its ``__spec__``) and by anything that walks ``sys.modules`` (``inspect.getmodule``,
which torch calls while registering diffusers' custom ops).

How: for a model without bitsandbytes weights, the pipeline class is imported while
bitsandbytes is hidden (diffusers' availability flag off, ``sys.modules["bitsandbytes"] =
None`` for peft's ``try``). Both are restored as soon as that import returns, and the two
names those modules would have bound are bound to ``_ImportedOnFirstUse("bitsandbytes")``.

Why it is safe: afterwards the process is as diffusers and peft would have left it, except
that bitsandbytes' own code runs on its first use instead of at start-up. diffusers' and
peft's checks made later (a quantizer's ``validate_environment``, peft's ``is_bnb_available``
when a LoRA is applied) find the installed package as before; their functions that read
``bnb`` run only for bitsandbytes layers, and reading ``bnb`` then imports it through the
normal import system (one module object, in ``sys.modules``). So nothing has to be undone
before a bitsandbytes model loads later in the same process, whether through
``load_model_parts`` or diffusers directly. ``tests/test_cold_start.py`` checks that the two
binding sites below are still the only modules on that path that import bitsandbytes or
ask whether it is installed while they are imported, in the installed versions.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

# Modules on the pipeline's import path that bind bitsandbytes at import time, and the name they bind.
EAGER_IMPORTERS = {"diffusers.quantizers.bitsandbytes.utils": "bnb", "peft.helpers": "bnb"}


class _ImportedOnFirstUse:
    """Stands where ``import bitsandbytes as bnb`` would have bound the module: the first
    attribute read imports it through the normal import system, and every read answers
    from it. It is not put in ``sys.modules`` (see the module docstring for why)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use>"


def import_pipeline_class(name: str, *, bitsandbytes: bool) -> type:
    """diffusers' pipeline class ``name``, imported without bitsandbytes unless ``bitsandbytes``
    (the model has bitsandbytes weights) or something already imported it or the model layer."""
    import diffusers

    if bitsandbytes or not _can_defer_bitsandbytes():
        return getattr(diffusers, name)
    from diffusers.utils import import_utils

    flag = import_utils._bitsandbytes_available
    import_utils._bitsandbytes_available = False
    sys.modules["bitsandbytes"] = None  # type: ignore[assignment]  # `import` raises ImportError
    try:
        pipeline_class = getattr(diffusers, name)
    finally:
        import_utils._bitsandbytes_available = flag
        del sys.modules["bitsandbytes"]
    for module_name, attribute in EAGER_IMPORTERS.items():
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, attribute, None) is None:
            setattr(module, attribute, _ImportedOnFirstUse("bitsandbytes"))
    return pipeline_class


def _can_defer_bitsandbytes() -> bool:
    """Installed, not imported yet, and diffusers' model layer not imported yet either (it
    would have bound bitsandbytes already, or been imported here before)."""
    return ("bitsandbytes" not in sys.modules and "diffusers.models.modeling_utils" not in sys.modules
            and importlib.util.find_spec("bitsandbytes") is not None)
