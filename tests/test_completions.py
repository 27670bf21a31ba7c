"""completions/flux2.{bash,zsh,fish}: up to date with the app, and working in a real bash."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from console_script import FLUX2

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gen_completions", ROOT / "scripts" / "gen_completions.py")
gen_completions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_completions)


@pytest.mark.parametrize("shell", gen_completions.SHELLS)
def test_checked_in_scripts_are_up_to_date(shell):
    path = ROOT / "completions" / f"flux2.{shell}"
    assert path.is_file(), f"{path} is missing: run python scripts/gen_completions.py"
    assert path.read_text(encoding="utf-8") == gen_completions.render(shell, FLUX2), (
        f"{path.name} is out of date: run python scripts/gen_completions.py")


def test_the_check_mode_notices_a_stale_file(tmp_path, monkeypatch):
    monkeypatch.setattr(gen_completions, "FOLDER", tmp_path)
    monkeypatch.setattr(gen_completions, "ROOT", tmp_path)
    assert gen_completions.main(["--check"]) == 1  # nothing there yet
    assert gen_completions.main([]) == 0
    assert gen_completions.main(["--check"]) == 0
    (tmp_path / "flux2.zsh").write_text("#compdef flux2\n")
    assert gen_completions.main(["--check"]) == 1


def test_zsh_file_starts_with_compdef():
    assert (ROOT / "completions" / "flux2.zsh").read_text().startswith("#compdef flux2\n")


def _bash_complete(line: str) -> list[str]:
    """Source completions/flux2.bash in bash and ask it to complete ``line`` as typed."""
    words = line.split(" ")
    script = (f"source {ROOT / 'completions' / 'flux2.bash'}\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              "_flux2_completion flux2\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = {**os.environ, "PATH": f"{Path(FLUX2).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.splitlines() if word]


@pytest.mark.skipif(not shutil.which("bash"), reason="bash is not installed")
def test_bash_completes_commands_options_and_model_names():
    assert _bash_complete("flux2 gen") == ["generate"]
    assert "--from-image" in _bash_complete("flux2 generate --fr")
    assert _bash_complete("flux2 generate --model ti") == ["tiny"]
    assert set(_bash_complete("flux2 serve --model klein")) == {"klein-4b", "klein-9b", "klein-base-4b", "klein-base-9b",
                                                                  "klein-9b-kv"}
    assert _bash_complete("flux2 serve --offload s") == ["sequential"]
    assert _bash_complete("flux2 generate --vae-tiling o") == ["on", "off"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_protocols_answer(shell):
    # The zsh and fish scripts pass the command line in _TYPER_COMPLETE_ARGS; their shells are not needed
    # to check that flux2 answers it.
    env = {**os.environ, "_FLUX2_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": "flux2 generate --model ti",
           "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    result = subprocess.run([FLUX2], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and "tiny" in result.stdout, (result.stdout, result.stderr)


def test_completion_stays_light():
    # Each Tab press runs flux2: it must never import torch.
    env = {**os.environ, "_FLUX2_COMPLETE": "complete_bash", "COMP_WORDS": "flux2 generate --model ti",
           "COMP_CWORD": "3"}
    result = subprocess.run([sys.executable, "-X", "importtime", FLUX2], capture_output=True, text=True, env=env,
                            timeout=60)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "typer" in imported and not {"torch", "diffusers", "transformers"} & imported
