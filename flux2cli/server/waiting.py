"""Synchronous routes wait for their job here, and give it up when their client does."""

from __future__ import annotations

import asyncio

from aiohttp import web

from flux2cli.server.state import WORKER
from flux2cli.server.worker import Job

DISCONNECT_POLL_SECONDS = 0.25  # how often a waiting route checks that its client is still there


async def wait_for_job(request: web.Request, job: Job) -> None:
    """Wait for ``job`` and raise its error; a client that disconnects cancels it.

    A cancelled job stops at its next step (a queued one at once): nobody would read
    the answer, and the worker is free sooner for the clients that are still there.
    """
    worker = request.app[WORKER]
    try:
        while not await job.wait_finished(DISCONNECT_POLL_SECONDS):
            if request.transport is None or request.transport.is_closing():
                worker.cancel(job)
    except asyncio.CancelledError:  # the server cancels handlers whose client disconnected
        worker.cancel(job)
        raise
    if job.error is not None:
        raise job.error
