"""docs/cli.md is generated from --help and the settings registry; it must match the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
gen_cli_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_cli_docs)


def test_docs_cli_md_is_up_to_date():
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == gen_cli_docs.render(), "docs/cli.md is out of date: run python scripts/gen_cli_docs.py"


def test_it_covers_every_command_option_and_variable():
    from flux2cli.settings import ENV_VARS

    text = gen_cli_docs.render()
    for name in gen_cli_docs.command_names():
        assert f"### `flux2 {name}`" in text and f"Usage: flux2 {name} [OPTIONS]" in text
    assert all(f"`{name}`" in text for name in ENV_VARS)
    assert "--from-image" in text and "--install-completion" in text


def test_rendering_ignores_the_callers_terminal(monkeypatch):
    first = gen_cli_docs.help_text(["generate"], gen_cli_docs.flux2_executable())
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("LANG", "C")
    again = gen_cli_docs.help_text(["generate"], gen_cli_docs.flux2_executable())
    assert again == first and "\x1b[" not in again
    assert 60 < max(len(line) for line in first.splitlines()) <= gen_cli_docs.WIDTH
