"""Running the installed `flux2` console script in a subprocess, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

FLUX2 = shutil.which("flux2", path=str(Path(sys.executable).parent)) or shutil.which("flux2")
# Plain, wide, uncoloured output, so assertions see whole lines.
PLAIN = {"NO_COLOR": "1", "TERMINAL_WIDTH": "200", "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"}


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 240,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert FLUX2, "flux2 is not on PATH: install the package (pip install -e .)"
    return subprocess.run([FLUX2, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          input=stdin, env={**os.environ, **PLAIN, **(env or {})})
