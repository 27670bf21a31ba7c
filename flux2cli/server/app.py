"""The application factory, the runner and the serve-until-signalled loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator, Callable

from aiohttp import web

from flux2cli.errors import Flux2Error
from flux2cli.pipeline.output import prepare_output_dir, recover_output_dir
from flux2cli.server.config import ServerConfig
from flux2cli.server.connections import (
    BACKLOG,
    GUARD,
    ConnectionGuard,
    GuardedRunner,
    activity_middleware,
    connection_cap,
)
from flux2cli.server.logs import OncePer, ParserLog, install_escaping
from flux2cli.server.routes import setup_routes
from flux2cli.server.security import MIDDLEWARES, add_security_headers
from flux2cli.server.state import CONFIG, ENGINE, WORKER
from flux2cli.server.worker import GenerationEngine, GenerationWorker

log = logging.getLogger("flux2cli.server")

SHUTDOWN_TIMEOUT = 10.0  # seconds in-flight requests get to finish once a signal arrives


def init_app(engine: GenerationEngine, config: ServerConfig) -> web.Application:
    """Build the application around an already loaded engine."""
    config = replace(config, output_dir=Path(config.output_dir).expanduser().resolve())
    install_escaping()
    app = web.Application(middlewares=(activity_middleware, *MIDDLEWARES), client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[ENGINE] = engine
    app[GUARD] = ConnectionGuard(connection_cap(config.max_connections))
    app.cleanup_ctx.append(_worker_context)
    app.on_shutdown.append(_stop_accepting_work)
    app.on_response_prepare.append(add_security_headers)
    setup_routes(app)
    return app


async def _worker_context(app: web.Application) -> AsyncIterator[None]:
    """Start the one generation worker with the app; stop it (and its thread) after."""
    config = app[CONFIG]
    prepare_output_dir(config.output_dir)
    if removed := recover_output_dir(config.output_dir):
        log.info("removed %d file(s) an interrupted save left in the output folder", removed)
    worker = GenerationWorker(app[ENGINE], config.output_dir, queue_size=config.queue_size,
                              reference_pixel_budget=config.reference_pixel_budget,
                              preview_every=config.preview_every)
    await worker.start()
    app[WORKER] = worker
    yield
    await worker.stop()


async def _stop_accepting_work(app: web.Application) -> None:
    """on_shutdown (before in-flight requests are awaited): cancel queued and running jobs,
    so waiting /generate calls and event streams end promptly."""
    app[WORKER].begin_shutdown()


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner every entry point uses: disconnected clients cancel their handlers, at most
    the guard's number of connections are open, headers must arrive within the header
    timeout, and the HTTP parser's refusals are logged as one line, not a traceback each."""
    return GuardedRunner(app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None,
                         keepalive_timeout=app[CONFIG].header_timeout, logger=ParserLog())


def check_can_listen(host: str, port: int) -> None:
    """Fail fast, before a slow model load, when the address cannot be bound."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's TCPSite does
            probe.bind(address)
    except OSError as error:
        raise _listen_error(host, port, error) from None


def _listen_error(host: str, port: int, error: OSError) -> Flux2Error:
    reason = error.strerror or type(error).__name__
    return Flux2Error(f"cannot listen on {host}:{port} ({reason}); "
                      f"is another server running there? pick another --port")


async def start_site(runner: web.AppRunner, host: str, port: int) -> str:
    """Bind and start; returns the base URL (with the real port when ``port`` is 0)."""
    site = web.TCPSite(runner, host, port, backlog=BACKLOG)
    try:
        await site.start()
    except OSError as error:
        raise _listen_error(host, port, error) from None
    bound_port = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{bound_port}"


def _quiet_resource_errors() -> Callable[[asyncio.AbstractEventLoop, dict], None]:
    """asyncio reports every accept() that fails for lack of descriptors (and retries a
    second later): a line a minute instead, should it happen despite the connection cap."""
    accept_failures = OncePer(60.0)

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            if count := accept_failures.due():
                error = context.get("exception")
                log.warning("could not accept %d connection(s): %s", count, getattr(error, "strerror", error))
            return
        loop.default_exception_handler(context)

    return handle


def run_server(engine: GenerationEngine, config: ServerConfig,
               on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop accepting, cancel the running job, return."""
    serve_app(lambda: init_app(engine, config), on_ready)


def serve_app(make_app: Callable[[], web.Application], on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the app ``make_app`` builds (on the server's loop) at its ``CONFIG``'s address,
    behind the connection guard, until SIGINT or SIGTERM."""
    asyncio.run(_serve(make_app, on_ready))


async def _serve(make_app: Callable[[], web.Application], on_ready: Callable[[str], None] | None) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_resource_errors())
    stop = asyncio.Event()
    app = make_app()
    config = app[CONFIG]
    runner = make_runner(app)
    await runner.setup()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        url = await start_site(runner, config.host, config.port)
        for sig in signals:
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
                pass
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
        worker = app.get(WORKER)  # None: an app without generations (the encoder server)
        running = len(worker.active) if worker is not None else 0
        cancelling = {0: "", 1: "; cancelling the running generation"}.get(
            running, f"; cancelling {running} running generations")
        log.info("stopping: no new requests%s", cancelling)
    finally:
        for sig in signals:  # a second Ctrl-C during shutdown interrupts at once
            try:
                loop.remove_signal_handler(sig)
            except NotImplementedError:
                pass
        await runner.cleanup()
