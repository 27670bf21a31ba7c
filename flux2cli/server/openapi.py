"""GET /openapi.json: an OpenAPI 3.1 description of every route and body.

The request bodies are generated from the field declaration (``pipeline/fields.py``) with
the loaded model's ranges; the paths and responses are a table kept next to the routes, and
``tests/test_server_api.py`` checks that every route the app registers appears here with
the same methods.
"""

from __future__ import annotations

from typing import Any

from flux2cli import __version__ as _version
from flux2cli.pipeline.fields import FIELD, MAX_REFERENCE_IMAGES, request_schema
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.server.history import DEFAULT_LIMIT, EXTRA_READS, IMAGE_NAME_PATTERN, MAX_LIMIT
from flux2cli.server.openai_payload import BACKGROUNDS, IGNORED_FIELDS, OUTPUT_FORMATS, RESPONSE_FORMATS, size_pattern
from flux2cli.server.worker import CANCELLED, DONE, ERROR, QUEUED, RUNNING


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "Error")
_BUSY = {**_json(_ref("Error"), "Busy: another generation runs, the queue is full or the server is "
                                 "shutting down"),
         "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}}
_COMMON_ERRORS = {
    "401": _json(_ref("Error"), "An API key is set and the request did not carry it"),
    "403": _json(_ref("Error"), "Host is not a loopback name while bound to loopback, or a cross-site request"),
}
_BODY_ERRORS = {
    "400": _json(_ref("Error"), "Invalid request: missing prompt, a value out of range, a bad image, ..."),
    "413": _json(_ref("Error"), "The request body is larger than the cap"),
    "415": _json(_ref("Error"), "The body is not sent as application/json"),
}
_JOB_ID = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]

_SCHEMAS: dict[str, Any] = {
    "ImageResult": {
        "type": "object",
        "required": ["filename", "seed", "timings"],
        "properties": {
            "filename": {"type": "string", "examples": ["flux2_20250104_143012_a1b2c3d4.png"]},
            "seed": {"type": "integer"},
            "timings": {"type": "object", "properties": {
                name: {"type": "number"} for name in ("encoding", "diffusion", "save", "total")}},
            "evaluations": {
                "type": "object", "description": "Addition. Step caching's work: full transformer evaluations "
                                                 "of the transformer calls (steps x guidance passes).",
                "properties": {"cache": {"type": "string"}, "steps": {"type": "integer"},
                               "transformer_calls": {"type": "integer"}, "full_evaluations": {"type": "integer"}}},
        },
    },
    "GenerateResponse": {
        "type": "object",
        "required": ["success", "images", "generation_time"],
        "properties": {
            "success": {"const": True},
            "images": {"type": "array", "items": _ref("ImageResult")},
            "generation_time": {"type": "number"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["success", "error"],
        "properties": {"success": {"const": False}, "error": {"type": "string"}},
    },
    "Status": {
        "type": "object",
        "required": ["generating", "prompt", "batch", "current"],
        "properties": {
            "generating": {"type": "boolean"},
            "prompt": {"type": ["string", "null"]},
            "batch": {"type": "integer"},
            "current": {"type": "integer"},
            "step": {"type": "integer", "description": "Addition: last finished step"},
            "total_steps": {"type": "integer", "description": "Addition"},
            "queued": {"type": "integer", "description": "Addition: jobs waiting"},
            "running": {"type": "array", "items": _ref("Running"),
                        "description": "Addition, with --replicas: every running generation, oldest first"},
            "replicas": _ref("Replicas"),
        },
    },
    "Loras": {
        "type": "object", "required": ["loras", "defaults"],
        "properties": {
            "loras": {"type": "array", "items": {
                "type": "object", "required": ["name", "family", "rank", "format"],
                "properties": {"name": {"type": "string"},
                               "family": {"type": "string", "description": "The model the file was made for"},
                               "rank": {"type": ["integer", "string", "null"]},
                               "format": {"type": ["string", "null"]}, "error": {"type": "string"}}}},
            "defaults": {"type": "array", "items": {"type": "object"},
                         "description": "What a request without `loras` gets (the server's --lora)"}}},
    "ModelInfo": {
        "type": "object",
        "required": ["model", "encoder", "description"],
        "properties": {"model": {"type": "string"}, "encoder": {"type": "string"},
                       "description": {"type": "string"}, "replicas": _ref("Replicas")},
    },
    "Running": {
        "type": "object",
        "properties": {"prompt": {"type": "string"},
                       **{name: {"type": "integer"} for name in ("batch", "current", "step", "total_steps")}},
    },
    "Replicas": {
        "type": "object", "required": ["ready", "total"],
        "description": "Addition, with --replicas: generation replicas ready and asked for (and the encoder's)",
        "properties": {"ready": {"type": "integer"}, "total": {"type": "integer"},
                       "encoder": {"type": "object", "properties": {"ready": {"type": "integer"},
                                                                   "total": {"type": "integer"}}}},
    },
    "Progress": {
        "type": "object",
        "properties": {name: {"type": "integer"} for name in ("step", "total_steps", "current", "batch")},
    },
    "Preview": {
        "type": "object",
        "properties": {
            "step": {"type": "integer"}, "total_steps": {"type": "integer"},
            "image": {"type": ["string", "null"], "description": "data:image/webp;base64,... at most 256 px a "
                      "side; null in events replayed after a newer preview"},
        },
    },
    "HistoryImage": {
        "type": "object",
        "required": ["filename", "url", "created", "prompt", "seed", "settings", "timings"],
        "properties": {
            "filename": {"type": "string", "examples": ["flux2_20250104_143012_a1b2c3d4.png"]},
            "url": {"type": "string", "description": "GET it for the PNG"},
            "created": {"type": ["string", "null"], "description": "From the file name, the server's local time"},
            "prompt": {"type": "string"},
            "seed": {"type": ["integer", "null"]},
            "settings": {"type": "object", "description": "The stored request fields (model, orientation and "
                                                          "size or width and height, steps, seed, batch, ...)"},
            "model_name": {"type": ["string", "null"]},
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "reference_images": {"type": "integer", "description": "How many were used (never their names)"},
            "masked": {"type": "boolean"},
        },
    },
    "History": {
        "type": "object",
        "required": ["success", "images", "next"],
        "properties": {
            "success": {"const": True},
            "images": {"type": "array", "items": _ref("HistoryImage")},
            "next": {"type": ["string", "null"], "description": "`before` for the next page; null on the last"},
        },
    },
    "JobCreated": {
        "type": "object",
        "properties": {
            "success": {"const": True}, "id": {"type": "string"},
            "state": {"const": QUEUED}, "position": {"type": "integer"},
            "status_url": {"type": "string"}, "events_url": {"type": "string"},
        },
    },
    "Job": {
        "type": "object",
        "properties": {
            "success": {"const": True},
            "id": {"type": "string"},
            "state": {"type": "string", "enum": [QUEUED, RUNNING, DONE, ERROR, CANCELLED]},
            "position": {"type": ["integer", "null"], "description": "1 = next to run"},
            "prompt": {"type": "string"},
            "progress": _ref("Progress"),
            "preview": {"oneOf": [_ref("Preview"), {"type": "null"}],
                        "description": "The newest preview while the job runs"},
            "cancel_requested": {"type": "boolean"},
            "result": {"oneOf": [_ref("GenerateResponse"), {"type": "null"}]},
            "error": {"type": ["string", "null"]},
            "status": {"type": ["integer", "null"], "description": "HTTP status matching the error"},
        },
    },
}

_PATHS: dict[str, Any] = {
    "/": {"get": {"summary": "The web UI", "security": [],
                  "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}}}},
    "/static/{filename}": {"get": {
        "summary": "The web UI's script and style sheet", "security": [],
        "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "A static file"}, "404": _ERROR}}},
    "/generate": {"post": {
        "summary": "Generate images synchronously (503 while another generation runs)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("GenerateRequest")}}},
        "responses": {"200": _json(_ref("GenerateResponse"), "The images were saved"), **_BODY_ERRORS,
                      **_COMMON_ERRORS, "500": _json(_ref("Error"), "The generation failed"),
                      "502": _json(_ref("Error"), "The text encoder failed"), "503": _BUSY,
                      "507": _json(_ref("Error"), "The device ran out of memory")}}},
    "/status": {"get": {"summary": "Whether a generation is in progress",
                        "responses": {"200": _json(_ref("Status"), "Status"), **_COMMON_ERRORS}}},
    "/model-info": {"get": {"summary": "The loaded model and text encoder",
                            "responses": {"200": _json(_ref("ModelInfo"), "Model"), **_COMMON_ERRORS}}},
    "/loras": {"get": {"summary": "Addition: the LoRAs requests may name in `loras`, and the default set",
                       "responses": {"200": _json(_ref("Loras"), "LoRAs"), **_COMMON_ERRORS}}},
    "/images/{filename}": {"get": {
        "summary": "A PNG of the output folder: this run's or an earlier run's, carrying flux2 metadata",
        "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "PNG image", "content": {"image/png": {}}},
                      "404": _json(_ref("Error"), "No such image: a missing file, another name, a symlink, or a "
                                                  "file without flux2 metadata (one answer for all)"),
                      **_COMMON_ERRORS}}},
    "/history": {"get": {
        "summary": "Addition: the newest images of the output folder with their stored settings, newest first",
        "description": "Paged: pass a page's `next` as `before` to read the page after it. A page may hold "
                       f"fewer than `limit` images while `next` is not null (at most limit + {EXTRA_READS} "
                       "files are opened per request); `next` is null on the last page.",
        "parameters": [
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
            {"name": "before", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": IMAGE_NAME_PATTERN},
             "description": "Only images older than this file name (a page's `next`)"}],
        "responses": {"200": _json(_ref("History"), "A page of images"),
                      "400": _json(_ref("Error"), "limit or before is not allowed"), **_COMMON_ERRORS}}},
    "/jobs": {"post": {
        "summary": "Queue a generation (addition); follow it with /jobs/{job_id}/events",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("GenerateRequest")}}},
        "responses": {"202": {**_json(_ref("JobCreated"), "Queued"),
                              "headers": {"Location": {"schema": {"type": "string"}}}},
                      **_BODY_ERRORS, **_COMMON_ERRORS, "503": _BUSY}}},
    "/jobs/{job_id}": {
        "get": {"summary": "A job's state, progress and result", "parameters": _JOB_ID,
                "responses": {"200": _json(_ref("Job"), "The job"), "404": _ERROR, **_COMMON_ERRORS}},
        "delete": {"summary": "Cancel a job (queued: at once; running: at its next step)", "parameters": _JOB_ID,
                   "responses": {"200": _json(_ref("Job"), "Cancelled"),
                                 "202": _json(_ref("Job"), "Cancelling: the running job stops at its next step"),
                                 "404": _ERROR, "409": _json(_ref("Error"), "The job had already finished"),
                                 **_COMMON_ERRORS}},
    },
    "/jobs/{job_id}/events": {"get": {
        "summary": "Server-Sent Events of a job",
        "description": (
            "Events, each with an id (Last-Event-ID resumes) and JSON data: `queued` {state, position}, "
            "`started` {state, total_steps, batch}, `step` {step, total_steps, current, batch}, "
            "`preview` {step, total_steps, image} (the image as it forms: at most one a step and one every "
            "--preview-every seconds, unless the request sent preview: false or the server runs with "
            "--no-previews), `done` {state, result: GenerateResponse}, `error` {state: error|cancelled, error, "
            "status}. "
            "The stream ends after `done` or `error`."),
        "parameters": _JOB_ID,
        "responses": {"200": {"description": "Event stream", "content": {"text/event-stream": {}}},
                      "404": _ERROR, **_COMMON_ERRORS}}},
    "/openapi.json": {"get": {"summary": "This document",
                              "responses": {"200": {"description": "OpenAPI 3.1",
                                                    "content": {"application/json": {}}},
                                            **_COMMON_ERRORS}}},
}


# -- additions: OpenAI's Images API (flux2cli/server/openai_api.py) ----------------------

_OPENAI_ERROR = _json(_ref("OpenAIError"), "Error, in OpenAI's shape")
_OPENAI_ERRORS = {
    "400": _json(_ref("OpenAIError"), "Invalid request; `param` names the field"),
    "401": _json(_ref("OpenAIError"), "An API key is set and the request did not carry it (code invalid_api_key)"),
    "403": _json(_ref("OpenAIError"), "Host is not a loopback name while bound to loopback, or a cross-site request"),
    "404": _json(_ref("OpenAIError"), "`model` names another model than the one loaded (code model_not_found)"),
    "413": _json(_ref("OpenAIError"), "The request body is larger than the cap"),
    "415": _json(_ref("OpenAIError"), "Wrong Content-Type"),
    "500": _json(_ref("OpenAIError"), "The generation failed"),
    "503": {**_json(_ref("OpenAIError"), "The queue is full or the server is shutting down"),
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
}
_OPENAI_OWN = {
    "model": {"type": "string", "description": "The loaded model's name, alias or display name; OpenAI's "
                                               "names (dall-e-*, gpt-image-*) also mean the loaded model"},
    "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": RESPONSE_FORMATS[0]},
    "output_format": {"type": "string", "enum": [*OUTPUT_FORMATS, "jpg"], "default": OUTPUT_FORMATS[0]},
    "output_compression": {"type": "integer", "minimum": 0, "maximum": 100, "default": 100,
                           "description": "JPEG / WebP quality"},
    "background": {"type": "string", "enum": list(BACKGROUNDS)},
    "stream": {"const": False},
    "partial_images": {"const": 0},
}
_IGNORED = {name: {"description": "Accepted and ignored"} for name in IGNORED_FIELDS}
_SCHEMAS.update({
    "OpenAIImagesResponse": {
        "type": "object", "required": ["created", "data"],
        "properties": {
            "created": {"type": "integer"},
            "data": {"type": "array", "items": {"type": "object", "properties": {
                "b64_json": {"type": "string"}, "url": {"type": "string", "format": "uri"},
                "revised_prompt": {"type": "string"}}}},
            "output_format": {"type": "string"},
            "size": {"type": "string"},
        },
    },
    "OpenAIModel": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                       "owned_by": {"type": "string"}},
    },
    "OpenAIModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("OpenAIModel")}},
    },
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
    },
})
_IMAGES = _json(_ref("OpenAIImagesResponse"), "The images, saved like every other generation's")
_PATHS.update({
    "/v1/images/generations": {"post": {
        "summary": "OpenAI Images API: generate (waits in the job queue)", "tags": ["OpenAI"],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("OpenAIImageGenerationRequest")}}},
        "responses": {"200": _IMAGES, **_OPENAI_ERRORS}}},
    "/v1/images/edits": {"post": {
        "summary": "OpenAI Images API: edit, the images as references (waits in the job queue)", "tags": ["OpenAI"],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": _ref("OpenAIImageEditRequest"), "encoding": {
                name: {"contentType": "image/png, image/jpeg, image/webp"} for name in ("image", "image[]", "mask")}}}},
        "responses": {"200": _IMAGES, **_OPENAI_ERRORS}}},
    "/v1/models": {"get": {"summary": "OpenAI Models API: the loaded model", "tags": ["OpenAI"],
                           "responses": {"200": _json(_ref("OpenAIModelList"), "One model"),
                                         "401": _OPENAI_ERRORS["401"], "403": _OPENAI_ERRORS["403"]}}},
    "/v1/models/{model}": {"get": {
        "summary": "OpenAI Models API: the loaded model by any of its names", "tags": ["OpenAI"],
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json(_ref("OpenAIModel"), "The model"), "404": _OPENAI_ERROR,
                      "401": _OPENAI_ERRORS["401"], "403": _OPENAI_ERRORS["403"]}}},
})


def _openai_requests(spec: ModelSpec, loras: tuple[str, ...] | None) -> dict[str, Any]:
    """OpenAI's own fields, and ours under their OpenAI names (n = batch), from the declaration."""
    width, height = spec.dimensions("square", "1mp")
    size = {"type": "string", "pattern": size_pattern(spec), "default": "auto",
            "examples": ["auto", f"{width}x{height}", "x".join(map(str, spec.dimensions("landscape", "1mp")))],
            "description": "auto, or WIDTHxHEIGHT: multiples of 16 that fit within one of the model's 4mp sizes"}
    ours = {field.openai: field.schema(spec, loras) for field in FIELD.values()
            if field.openai and field.openai != "size"}
    common = {**_OPENAI_OWN, "size": size, **ours}
    strength = common.pop("strength")
    # A JSON body may send null for "the default"; a form has no null, only fields left out.
    nullable = {name: {"anyOf": [_typed(schema), {"type": "null"}], **_described(schema)}
                for name, schema in common.items() if name != "prompt"}
    return {
        "OpenAIImageGenerationRequest": {
            "type": "object", "required": ["prompt"], "additionalProperties": False,
            "description": "size auto = the model's square 1 MP",
            "properties": {**common, **nullable, **_IGNORED},
        },
        "OpenAIImageEditRequest": {
            "type": "object", "required": ["prompt", "image"], "additionalProperties": False,
            "description": "The images become reference images; size auto = the orientation nearest the first "
                           "image's shape, at 1 MP",
            "properties": {
                **{name: {**_typed(schema), **_described(schema)} for name, schema in common.items()},
                **_IGNORED,
                "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP file"},
                "image[]": {"type": "array", "maxItems": MAX_REFERENCE_IMAGES,
                            "items": {"type": "string", "format": "binary"}},
                "strength": {**_typed(strength), **_described(strength)},
                "loras": {"type": "string", "contentMediaType": "application/json",
                          "contentSchema": _typed(common["loras"]),
                          "description": f"JSON text (a form has no arrays of objects). {common['loras']['description']}"},
                "mask": {"type": "string", "format": "binary",
                         "description": "PNG with an alpha channel, OpenAI's convention: fully transparent "
                                        "pixels mark the area of the first image to edit; the rest comes back "
                                        "exactly"},
            },
        },
    }


def _typed(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's schema without its null branch and description."""
    branches = [branch for branch in schema.get("anyOf", [schema]) if branch.get("type") != "null"]
    typed = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {key: value for key, value in typed.items() if key not in ("description", "default")}


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: schema[key] for key in ("description", "default") if key in schema}


def openapi_document(spec: ModelSpec, loras: tuple[str, ...] | None = None) -> dict[str, Any]:
    """This server's document: the request bodies state the loaded model's own ranges."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "flux2cli server", "version": _version,
                 "description": "The FLUX.2 REST API of the reference, plus a job queue with progress "
                                "events. Errors are always {\"success\": false, \"error\": \"...\"}, "
                                "except under /v1/ (OpenAI's Images API), where they take OpenAI's "
                                "shape {\"error\": {\"message\", \"type\", \"param\", \"code\"}}."},
        "paths": _PATHS,
        "components": {
            "schemas": {"GenerateRequest": request_schema(spec, loras), **_SCHEMAS, **_openai_requests(spec, loras)},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }
