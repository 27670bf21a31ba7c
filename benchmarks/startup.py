"""1. Start-up: `flux2 --help` against `python -c pass` and a bare `import torch, diffusers`.

Each command runs in a fresh process, interleaved, medians compared. ``-X importtime``
then says where `flux2 --help`'s time goes, by top-level package.

The package is byte-compiled first, as `pip install` does: in an editable checkout under
PYTHONDONTWRITEBYTECODE=1 (this sandbox, many CI images) every start would otherwise compile
flux2cli from source, about 25 ms that no installed copy pays.
"""

from __future__ import annotations

import compileall
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import flux2_executable, interleave, median, summary

TARGET_S = 0.15


def _command(argv: list[str]):
    def run(_round: int) -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


def import_profile(argv: list[str], runs: int = 5) -> dict[str, Any]:
    """Where the imports' time goes, from ``python -X importtime`` (ms, largest first).

    Each module's time is the minimum over ``runs`` runs: a background job can only add
    time, so the minimum is the best estimate of the module's own cost.
    """
    self_ms: dict[str, float] = {}
    cumulative_ms: dict[str, float] = {}
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True)
        for line in result.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = line[len("import time:"):].split("|")
            module = name.strip()
            self_ms[module] = min(self_ms.get(module, float("inf")), int(self_us) / 1000)
            cumulative_ms[module] = min(cumulative_ms.get(module, float("inf")), int(cum_us) / 1000)
    by_package: dict[str, float] = defaultdict(float)
    for module, ms in self_ms.items():
        by_package[module.split(".")[0]] += ms
    heaviest = sorted(by_package.items(), key=lambda item: -item[1])[:15]
    top_modules = sorted(cumulative_ms.items(), key=lambda item: -item[1])[:30]
    return {"total_import_ms": round(sum(self_ms.values()), 1),
            "self_ms_by_package": {name: round(ms, 1) for name, ms in heaviest},
            "cumulative_ms_by_module": {name: round(ms, 1) for name, ms in top_modules}}


def run(quick: bool = False) -> dict[str, Any]:
    import flux2cli

    compileall.compile_dir(Path(flux2cli.__file__).parent, quiet=1)
    flux2 = flux2_executable()
    variants = {
        "python -c pass": _command([sys.executable, "-c", "pass"]),
        "import torch, diffusers": _command([sys.executable, "-c", "import torch, diffusers"]),
        "flux2 --help": _command([flux2, "--help"]),
        "python -c 'import flux2cli.cli'": _command([sys.executable, "-c", "import flux2cli.cli"]),
    }
    times = interleave(variants, rounds=5 if quick else 15, warmup=1)
    help_s = median(times["flux2 --help"])
    profile = import_profile(["-m", "flux2cli", "--help"], runs=3 if quick else 7)
    ratio_pass = help_s / median(times["python -c pass"])
    ratio_torch = help_s / median(times["import torch, diffusers"])
    return {
        "name": "startup",
        "times_s": {name: summary(values) for name, values in times.items()},
        "flux2_help_s": round(help_s, 4),
        "ratio_vs_python_pass": round(ratio_pass, 2),
        "ratio_vs_import_torch_diffusers": round(ratio_torch, 3),
        "import_profile": profile,
        "rows": [
            ("start-up: flux2 --help", f"{help_s:.3f} s = {ratio_pass:.1f}x `python -c pass`, "
             f"{ratio_torch:.2f}x `import torch, diffusers`", f"<= {TARGET_S} s", help_s <= TARGET_S),
        ],
    }
