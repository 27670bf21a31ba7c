"""Resident model: a whole `flux2 generate --model tiny` process through a running `flux2 serve`
against the same command in-process (`--local`), fresh processes, interleaved, medians compared.

The server runs `flux2 serve --model tiny` on a free loopback port (started once, not timed);
each delegated run is a cold process that imports no torch, asks the server and writes the
files. Both sides make the same image (same prompt, seed and steps) into their own folders.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import flux2_executable, interleave, median, summary
from benchmarks.server import _free_port, _start_server, _stop_server

PROMPT = "a red circle on a blue background"
TARGET_S = 1.0  # issue 20: "well under 1 s of process time"


def _generate(flux2: str, out: Path, *extra: str, env: dict[str, str]):
    def run(round_: int) -> None:
        subprocess.run([flux2, "generate", PROMPT, "--model", "tiny", "--seed", "7", "-o", str(out / str(round_)),
                        *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return run


def run(quick: bool = False) -> dict[str, Any]:
    flux2 = flux2_executable()
    port = _free_port()
    env = {**os.environ, "FLUX2_SERVER": "off"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        process = _start_server(flux2, port, root / "served", root / "serve.log")
        try:
            times = interleave({
                "delegated": _generate(flux2, root / "delegated", "--server", f"http://127.0.0.1:{port}", env=env),
                "local": _generate(flux2, root / "local", "--local", env=env),
            }, rounds=3 if quick else 7, warmup=1)
        finally:
            _stop_server(process)
    delegated, local = median(times["delegated"]), median(times["local"])
    return {
        "name": "resident",
        "times_s": {name: summary(values) for name, values in times.items()},
        "delegated_s": round(delegated, 3),
        "local_s": round(local, 3),
        "ratio_local_vs_delegated": round(local / delegated, 1),
        "rows": [("resident model: flux2 generate --model tiny",
                  f"{delegated:.2f} s through flux2 serve vs {local:.2f} s in-process ({local / delegated:.1f}x)",
                  f"<= {TARGET_S} s", delegated <= TARGET_S)],
    }
