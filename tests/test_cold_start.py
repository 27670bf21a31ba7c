"""Cold start: a model without bitsandbytes weights never imports bitsandbytes (pipeline/library_imports.py).

Each test runs in a fresh process: what a process has imported is the thing under test,
and this pytest process has usually imported everything already.

Only bitsandbytes is avoided. ``torch._dynamo`` is not: transformers' ``masking_utils``
imports it unconditionally for the text encoders FLUX.2 uses (docs/performance.md).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes", reason="bitsandbytes is an optional extra: pip install 'flux2cli[bnb]'")

TESTS = Path(__file__).resolve().parent
PROMPT = "a red circle on a blue background"


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 600) -> dict:
    """Run ``code`` in a fresh interpreter (tests/ on its path); it prints one JSON line last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "PYTHONPATH": str(TESTS), **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_tiny_generate_never_imports_bitsandbytes(tmp_path):
    facts = _python(f"""
        import json, sys
        from flux2cli.cli import main

        sys.argv = ["flux2", "generate", {PROMPT!r}, "--model", "tiny", "--local", "--steps", "2",
                    "--output-dir", {str(tmp_path)!r}]
        try:
            main()
        except SystemExit as exit:
            code = exit.code
        modules = sorted(name for name in sys.modules if name.split(".")[0] in ("bitsandbytes", "torch", "peft"))
        print(json.dumps({{"code": code, "modules": modules}}))
    """)
    assert facts["code"] in (0, None)
    assert len(list(tmp_path.glob("*.png"))) == 1
    imported = set(facts["modules"])
    # What imports bitsandbytes eagerly was imported, and torch._dynamo (which cannot be avoided).
    assert {"peft.helpers", "torch._dynamo"} <= imported
    assert not {name for name in imported if name.split(".")[0] == "bitsandbytes"}


def test_after_a_tiny_load_the_libraries_still_see_bitsandbytes_and_a_bnb_model_loads(si, tmp_path):
    """In one process: tiny, then bitsandbytes used by diffusers directly (quantizing the [dev]
    stand-in, as tests/standins.py builds it), then the NF4 stand-in loaded and run by our code."""
    facts = _python(f"""
        import json, sys
        from pathlib import Path

        import standins
        from flux2cli.pipeline.engine import Engine
        from flux2cli.pipeline.loading import LoadOptions
        from flux2cli.pipeline.request import GenerationRequest

        def request(model, steps):
            return GenerationRequest.create({PROMPT!r}, model=model, steps=steps, seed=7, width=64, height=64)

        facts = {{}}
        with standins.one_torch_thread():
            tiny = Engine.load("tiny")
            tiny.generate(request("tiny", 2))
            facts["after_tiny"] = "bitsandbytes" in sys.modules
            import diffusers.utils, peft.import_utils, transformers.utils
            # Checks made later see the installed package (none was answered while it was hidden).
            facts["available"] = [diffusers.utils.is_bitsandbytes_available(),
                                  transformers.utils.is_bitsandbytes_available(),
                                  peft.import_utils.is_bnb_available()]
            facts["still_not_imported"] = "bitsandbytes" not in sys.modules
            standins.build_bnb_folder(Path({str(si.dev)!r}), Path({str(tmp_path / "bnb")!r}))
            import bitsandbytes
            from diffusers.quantizers.bitsandbytes import utils
            facts["same_module"] = utils.bnb.nn.Linear4bit is bitsandbytes.nn.Linear4bit
            nf4 = Engine.load("dev-bnb4", LoadOptions(hub_cache=Path({str(si.cache)!r})))
            facts["nf4_layers"] = sum(isinstance(m, bitsandbytes.nn.Linear4bit) for m in nf4.pipe.transformer.modules())
            facts["size"] = list(nf4.generate(request("dev-bnb4", 10))[0].image.size)
        print(json.dumps(facts))
    """, env={"HF_HUB_CACHE": str(si.cache), "HF_HUB_OFFLINE": "1"})
    assert facts["after_tiny"] is False
    assert facts["available"] == [True, True, True] and facts["still_not_imported"]
    assert facts["same_module"] and facts["nf4_layers"] > 0
    assert facts["size"] == [64, 64]


def test_the_deferred_modules_are_the_only_ones_that_bind_bitsandbytes_on_import():
    """If a diffusers, peft or transformers upgrade adds another module that imports bitsandbytes
    (or asks whether it is installed) while the pipeline is imported, hiding it would leave that
    module without it: EAGER_IMPORTERS must then name it."""
    found = _python("""
        import json, sys
        from flux2cli.pipeline.library_imports import import_pipeline_class
        from flux2cli.pipeline.loading import quiet_library_output

        quiet_library_output()  # as load_model_parts does before the pipeline's import
        before = set(sys.modules)
        import_pipeline_class("Flux2KleinPipeline", bitsandbytes=False)
        import_pipeline_class("Flux2Pipeline", bitsandbytes=False)
        new = {name: getattr(sys.modules[name], "__file__", None) for name in set(sys.modules) - before}
        print(json.dumps({"new": new, "bnb": "bitsandbytes" in sys.modules}))
    """)
    assert not found["bnb"]
    from flux2cli.pipeline.library_imports import EAGER_IMPORTERS

    binding = {name for name, path in found["new"].items()
               if path and path.endswith(".py") and _binds_bitsandbytes_on_import(Path(path).read_text())}
    assert binding == set(EAGER_IMPORTERS)


_CHECKS = {"is_bitsandbytes_available", "is_bnb_available", "is_bnb_4bit_available"}


def _binds_bitsandbytes_on_import(source: str) -> bool:
    """An ``import bitsandbytes`` or an availability check that runs when the module is imported
    (anywhere but inside a function)."""

    def visit(node: ast.AST) -> bool:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return False
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "bitsandbytes" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "bitsandbytes":
            return True
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in _CHECKS or any(isinstance(a, ast.Constant) and a.value == "bitsandbytes" for a in node.args):
                return True
        return any(visit(child) for child in ast.iter_child_nodes(node))

    return visit(ast.parse(source))
