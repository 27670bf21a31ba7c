"""Typed application state: the keys ``init_app`` fills and the handlers read."""

from __future__ import annotations

from aiohttp import web

from flux2cli.server.config import ServerConfig
from flux2cli.server.worker import GenerationEngine, GenerationWorker

CONFIG = web.AppKey("config", ServerConfig)
ENGINE = web.AppKey("engine", GenerationEngine)
WORKER = web.AppKey("worker", GenerationWorker)
