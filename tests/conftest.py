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
    # A `flux2 serve` someone runs on this machine must not take the tests' `flux2 generate`s.
    monkeypatch.setenv("FLUX2_SERVER", "off")


@pytest.fixture(scope="session")
def tiny_engine():
    """The embedded model, loaded once: loading costs seconds, generating far less."""
    from flux2cli.pipeline.engine import Engine

    return Engine.load("tiny")


@pytest.fixture(scope="module")
def server(tiny_engine, tmp_path_factory):
    """The real app with the embedded model on 127.0.0.1, one per test module (abuse/ guards its own)."""
    from flux2cli.server.config import ServerConfig
    from server_fixtures import LiveServer

    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path_factory.mktemp("out"))) as live:
        yield live


@pytest.fixture(scope="session")
def si(tmp_path_factory):
    """Tiny stand-ins laid out as the real hub repos and files, built once per session."""
    import standins

    return standins.session_standins(tmp_path_factory)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The stand-ins are so small that two threads mostly wait on each other (see standins)."""
    import standins

    with standins.one_torch_thread():
        yield


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the session (starting one costs seconds), 2 CPUs as on CI;
    Serve and Ray end with the session. Yields the address other processes join it at."""
    ray = pytest.importorskip("ray")
    from ray import serve

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield context.address_info["gcs_address"]
    serve.shutdown()
    ray.shutdown()
