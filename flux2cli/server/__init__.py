"""`flux2 serve`: the spec's REST API, a job queue with progress events, and the web UI.

``init_app(engine, config)`` builds the aiohttp application; ``run_server`` serves it
until SIGINT/SIGTERM. Nothing here imports torch: the engine is built by the caller.
"""

from __future__ import annotations

from flux2cli.server.app import init_app, make_runner, run_server
from flux2cli.server.config import ServerConfig

__all__ = ["ServerConfig", "init_app", "make_runner", "run_server"]
