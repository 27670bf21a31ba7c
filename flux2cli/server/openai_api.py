"""OpenAI's Images API on `flux2 serve`, so that clients made for OpenAI work with base_url=.../v1.

The calls go through the one worker like every other generation. They wait their turn
in its queue, as POST /jobs does, rather than answering 503 while anything runs as
/generate must: an OpenAI call is synchronous and clients expect it to take as long as it
takes. A full queue (or a server shutting down) answers 503 with Retry-After, which
OpenAI's clients honour by retrying. Images are saved like every other generation's.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.server.openai_compat import OpenAIRequestError
from flux2cli.server.edit_form import read_edit_form
from flux2cli.server.json_body import read_json_object
from flux2cli.server.loras import check_offered
from flux2cli.server.openai_payload import ImagesCall, edit_call, generation_call, model_names
from flux2cli.server.responses import json_response
from flux2cli.server.state import CONFIG, ENGINE, WORKER
from flux2cli.server.waiting import wait_for_job

STARTED = web.AppKey("openai_started", int)  # the models' "created": when this server started


def setup_openai_routes(app: web.Application) -> None:
    app[STARTED] = int(time.time())
    app.router.add_post("/v1/images/generations", generations, name="openai-generations")
    app.router.add_post("/v1/images/edits", edits, name="openai-edits")
    app.router.add_get("/v1/models", models, name="openai-models")
    app.router.add_get("/v1/models/{model}", model, name="openai-model")


async def generations(request: web.Request) -> web.Response:
    """POST /v1/images/generations: a JSON body, as OpenAI's clients send it."""
    request.app[WORKER].check_can_queue()  # answer 503 before reading the body
    body = await read_json_object(request)
    return await _generate(request, generation_call(body, request.app[ENGINE].spec))


async def edits(request: web.Request) -> web.Response:
    """POST /v1/images/edits: a multipart form whose images become reference images."""
    request.app[WORKER].check_can_queue()
    fields, images = await read_edit_form(request, request.app[CONFIG].max_body_bytes)
    return await _generate(request, edit_call(fields, images, request.app[ENGINE].spec))


async def models(request: web.Request) -> web.Response:
    """GET /v1/models: the one model this server has loaded."""
    return json_response({"object": "list", "data": [_model_entry(request.app)]})


async def model(request: web.Request) -> web.Response:
    """GET /v1/models/{model}: the loaded model under any of its names; others are 404."""
    spec = request.app[ENGINE].spec
    name = request.match_info["model"]
    if name.strip().lower() not in model_names(spec):
        raise OpenAIRequestError(f"The model {name[:80]!r} does not exist here; this server runs {spec.name!r}",
                                 param="model", code="model_not_found", status=404)
    return json_response(_model_entry(request.app))


def _model_entry(app: web.Application) -> dict[str, Any]:
    spec: ModelSpec = app[ENGINE].spec
    owner = "flux2cli" if spec.family == "tiny" else "black-forest-labs"
    return {"id": spec.name, "object": "model", "created": app[STARTED], "owned_by": owner}


async def _generate(request: web.Request, call: ImagesCall) -> web.Response:
    try:
        check_offered(call.request, request.app[ENGINE])
    except InvalidRequest as error:
        raise OpenAIRequestError(str(error), param="loras") from None
    job = request.app[WORKER].submit(call.request, exclusive=False)
    await wait_for_job(request, job)
    images = job.result["images"]
    if call.response_format == "url":
        route = request.app.router["image"]
        data = [{"url": str(request.url.origin().join(route.url_for(filename=image["filename"])))}
                for image in images]
    else:
        folder = Path(request.app[CONFIG].output_dir)
        encoded = await asyncio.to_thread(
            lambda: [_encode(folder / image["filename"], call) for image in images])
        data = [{"b64_json": text} for text in encoded]
    for entry in data:
        entry["revised_prompt"] = call.request.prompt
    return json_response({"created": int(time.time()), "data": data, "output_format": call.output_format,
                          "size": f"{call.request.width}x{call.request.height}"})


def _encode(path: Path, call: ImagesCall) -> str:
    """The saved PNG (with its metadata) as it is, or converted for jpeg and webp."""
    data = path.read_bytes()
    if call.output_format != "png":
        from PIL import Image

        buffer = io.BytesIO()
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB").save(buffer, format=call.output_format.upper(), quality=call.compression)
        data = buffer.getvalue()
    return base64.b64encode(data).decode("ascii")
