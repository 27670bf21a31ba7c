"""The routes: the spec's REST API, the job queue additions and the web UI's files."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from flux2cli.server import history
from flux2cli.server.json_body import read_json_object
from flux2cli.server.loras import check_offered, list_loras, offered
from flux2cli.server.openai_api import setup_openai_routes
from flux2cli.server.openapi import openapi_document
from flux2cli.server.payload import generation_request, wants_previews
from flux2cli.server.responses import json_response
from flux2cli.server.state import ENGINE, WORKER
from flux2cli.server.waiting import wait_for_job
from flux2cli.server.worker import Job

STATIC_DIR = Path(__file__).resolve().parent / "static"
SSE_KEEPALIVE_SECONDS = 15.0


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="index")
    app.router.add_static("/static/", STATIC_DIR, name="static", follow_symlinks=False)
    app.router.add_post("/generate", generate, name="generate")
    app.router.add_get("/status", status, name="status")
    app.router.add_get("/model-info", model_info, name="model-info")
    app.router.add_get("/images/{filename}", history.image, name="image")
    app.router.add_get("/history", history.history, name="history")
    app.router.add_post("/jobs", create_job, name="jobs")
    app.router.add_get("/jobs/{job_id}", get_job, name="job")
    app.router.add_delete("/jobs/{job_id}", delete_job, name="job-delete")
    app.router.add_get("/jobs/{job_id}/events", job_events, name="job-events")
    app.router.add_get("/openapi.json", openapi, name="openapi")
    app.router.add_get("/loras", list_loras, name="loras")
    setup_openai_routes(app)  # additions: OpenAI's Images API under /v1/


# -- the spec's routes -------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the web UI."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def generate(request: web.Request) -> web.Response:
    """POST /generate: one synchronous generation, or 503 while anything else runs."""
    worker = request.app[WORKER]
    worker.check_can_generate_now()  # answer 503 before reading a large upload
    body = await read_json_object(request)
    job = worker.submit(check_offered(await generation_request(body, request.app[ENGINE].spec), request.app[ENGINE]),
                        exclusive=True)
    await wait_for_job(request, job)
    return json_response(job.result)


async def status(request: web.Request) -> web.Response:
    """GET /status: what the worker is doing; never waits on the generation."""
    return json_response(request.app[WORKER].status())


async def model_info(request: web.Request) -> web.Response:
    """GET /model-info: the model really loaded and its text encoder (and, on Ray Serve, its replicas)."""
    body = request.app[ENGINE].describe()
    replicas = request.app[WORKER].replicas()
    if replicas is not None:
        body = {**body, "replicas": replicas}
    return json_response(body)


# -- additions: the job queue ------------------------------------------------------


async def create_job(request: web.Request) -> web.Response:
    """POST /jobs: queue a generation; 202 with its id, 503 when the queue is full."""
    worker = request.app[WORKER]
    worker.check_can_queue()
    body = await read_json_object(request)
    job = worker.submit(check_offered(await generation_request(body, request.app[ENGINE].spec), request.app[ENGINE]),
                        exclusive=False, previews=wants_previews(body))
    location = f"/jobs/{job.id}"
    return json_response(
        {"success": True, "id": job.id, "state": job.state, "position": job.position,
         "status_url": location, "events_url": f"{location}/events"},
        status=202, headers={"Location": location})


def _job(request: web.Request) -> Job:
    job = request.app[WORKER].get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(text="no such job (finished jobs are kept only for a while)")
    return job


async def get_job(request: web.Request) -> web.Response:
    """GET /jobs/{id}: state, progress and, once done, the spec's success body as result."""
    return json_response(_job(request).snapshot())


async def delete_job(request: web.Request) -> web.Response:
    """DELETE /jobs/{id}: cancel this job only (queued: at once; running: at its next step)."""
    job = _job(request)
    if job.is_finished:
        raise web.HTTPConflict(text=f"the job has already finished ({job.state})")
    request.app[WORKER].cancel(job)
    return json_response(job.snapshot(), status=200 if job.is_finished else 202)


async def job_events(request: web.Request) -> web.StreamResponse:
    """GET /jobs/{id}/events: Server-Sent Events from the job's start, or after Last-Event-ID."""
    job = _job(request)
    try:
        sent = max(0, int(request.headers.get("Last-Event-ID", "0")))
    except ValueError:
        sent = 0
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            while sent < len(job.events):
                await response.write(_sse(job.events[sent]))
                sent += 1
            if job.is_finished:
                break
            if not await job.wait_for_event(sent, SSE_KEEPALIVE_SECONDS):
                await response.write(b": keep-alive\n\n")
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; the job carries on
    return response


def _sse(event: dict) -> bytes:
    data = json.dumps(event["data"], separators=(",", ":"))
    return f"id: {event['id']}\nevent: {event['event']}\ndata: {data}\n\n".encode()


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: every route and body of this server."""
    return json_response(openapi_document(request.app[ENGINE].spec, loras=offered(request.app[ENGINE])))
