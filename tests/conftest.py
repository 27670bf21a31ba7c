"""Shared fixtures: an isolated environment and one tiny engine per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path_factory):
    """No test reads the user's settings, history or hub cache, or reaches the network."""
    home = tmp_path_factory.mktemp("flux2home")
    monkeypatch.setenv("FLUX2_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    for name in ("FLUX2_MODEL", "FLUX2_OUTPUT_DIR", "FLUX2_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def tiny_engine():
    """The embedded model, loaded once: loading costs seconds, generating far less."""
    from flux2cli.pipeline.engine import Engine

    return Engine.load("tiny")
