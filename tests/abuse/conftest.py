"""Fixtures of the abuse suite: one guarded server per module, checked after every test."""

from __future__ import annotations

import pytest

from flux2cli.server.config import ServerConfig
from guarded_server import OPEN, GuardedServer


@pytest.fixture(scope="module")
def server(tiny_engine, tmp_path_factory):
    """The real app with the embedded tiny model, as `flux2 serve --model tiny` runs it."""
    with GuardedServer(tiny_engine, ServerConfig(output_dir=tmp_path_factory.mktemp("abuse-out"))) as live:
        yield live


@pytest.fixture(autouse=True)
def every_server_survives():
    """Whatever a test threw at a server, it still answers and its folder holds no debris."""
    yield
    for live in list(OPEN):
        live.assert_survived()
