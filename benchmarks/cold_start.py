"""Cold start in-process: `flux2 generate ... --model tiny --local` as a whole process, with
and without bitsandbytes on its import path.

"before" is the import path as it was before pipeline/library_imports.py: the same command in
a process that imports bitsandbytes first. That is exactly the work the old path did (diffusers'
model layer and peft imported bitsandbytes while the pipeline was imported), and with it
already imported ``import_pipeline_class`` leaves diffusers alone, so the rest of the run is
the same code. "after" is the command as it runs now. Both start through ``python -c`` with
the console script's own entry point, interleaved, medians compared; the ratio is given for
wall time and for CPU time (user + system of the child): CPU time is what the imports cost,
and stays honest when other jobs share the cores.

``-X importtime`` then says where the "after" run's import time goes.
"""

from __future__ import annotations

import compileall
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import interleave, median, summary
from benchmarks.startup import import_profile

PROMPT = "a red circle on a blue background"
ENTRY = "import sys; from flux2cli.cli import main; sys.argv[0] = 'flux2'; sys.exit(main())"
BEFORE = "import bitsandbytes; " + ENTRY


def _generate_argv(output_dir: str) -> list[str]:
    return ["generate", PROMPT, "--model", "tiny", "--local", "--output-dir", output_dir]


def _command(code: str, output_dir: str, cpu: list[float]):
    env = {**os.environ, "FLUX2_SERVER": "off"}

    def run(_round: int) -> None:
        start = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code, *_generate_argv(output_dir)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = resource.getrusage(resource.RUSAGE_CHILDREN)
        if _round >= 0:  # not the warm-up
            cpu.append(end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime)
    return run


def run(quick: bool = False) -> dict[str, Any]:
    import flux2cli

    compileall.compile_dir(Path(flux2cli.__file__).parent, quiet=1)  # as startup.py: an installed copy's .pyc
    with tempfile.TemporaryDirectory(prefix="flux2-cold-") as output_dir:
        cpu: dict[str, list[float]] = {"before (bitsandbytes imported)": [], "after": []}
        variants = {name: _command(code, output_dir, cpu[name])
                    for name, code in zip(cpu, (BEFORE, ENTRY))}
        times = interleave(variants, rounds=3 if quick else 7, warmup=1)
        profile = import_profile(["-c", ENTRY, *_generate_argv(output_dir)], runs=1 if quick else 3)
    before, after = (median(times[name]) for name in cpu)
    cpu_before, cpu_after = (median(cpu[name]) for name in cpu)
    return {
        "name": "cold_start",
        "times_s": {name: summary(values) for name, values in times.items()},
        "cpu_s": {name: summary(values) for name, values in cpu.items()},
        "ratio_wall": round(before / after, 3),
        "ratio_cpu": round(cpu_before / cpu_after, 3),
        "import_profile_after": profile,
        "rows": [
            ("cold start: flux2 generate --model tiny --local",
             f"{after:.2f} s vs {before:.2f} s with bitsandbytes = {before / after:.2f}x faster "
             f"(CPU {cpu_after:.2f} s vs {cpu_before:.2f} s = {cpu_before / cpu_after:.2f}x)", "> 1x", after < before),
        ],
    }
