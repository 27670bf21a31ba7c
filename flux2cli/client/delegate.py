"""`flux2 generate` through a resident `flux2 serve`, as ollama's CLI uses its server.

The request goes to ``POST /jobs``, progress comes from the job's event stream, and the
images the server wrote come back through ``GET /images/{name}``: their PNG bytes already
carry the request's metadata, so they are written unchanged, with a sidecar from
``output.sidecar_text``, into the caller's output folder as a pair (sidecar first, PNG
last, each atomically), exactly as ``output.save_images`` lays out a local run.

Which server: ``--server URL`` (refused in one line when it is down or runs another model),
else the ``server`` setting (FLUX2_SERVER), else the default local address; those two fall
back to an in-process run with one notice when a server answers but cannot take the
request. Nothing listening at the default address is the ordinary case and says nothing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from flux2cli.errors import Busy, Flux2Error, GenerationCancelled, GenerationError, InvalidRequest
from flux2cli.pipeline.events import StepCallback, StepEvent
from flux2cli.pipeline.output import SavedImage, atomic_write, sidecar_text
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.pipeline.request import GenerationRequest
from flux2cli.settings import DEFAULT_HOST, DEFAULT_PORT

PROBE_SECONDS = 1.0  # a loopback server answers /model-info in milliseconds
NAMED_PROBE_SECONDS = 5.0  # a server the user named may be across a network
READ_SECONDS = 120.0  # the event stream sends a keep-alive every 15 s; silence this long is a dead server
OFF = "off"  # FLUX2_SERVER=off: never ask a server


@dataclass(frozen=True)
class Server:
    url: str  # without a trailing slash
    api_key: str | None
    named: bool  # --server: a failure is refused instead of falling back


def default_url(port: int | None) -> str:
    return f"http://{DEFAULT_HOST}:{port or DEFAULT_PORT}"


def choose(spec: ModelSpec, *, flag: str | None, setting: str | None, port: int | None, api_key: str | None,
           notify: Callable[[str], None]) -> Server | None:
    """The server that will run ``spec``, or None for an in-process run (with ``notify`` saying why,
    when a server answered or was configured but cannot take it)."""
    if flag is not None:
        server = Server(_checked_url(flag, "--server"), api_key, named=True)
        reason = _cannot_run(server, spec, NAMED_PROBE_SECONDS)
        if reason:
            raise InvalidRequest(f"--server {server.url} {reason}; start it with --model {spec.name}, "
                                 "or drop --server to run in-process")
        return server
    if setting is not None and setting.strip().lower() == OFF:
        return None
    configured = setting is not None
    url = _checked_url(setting, "FLUX2_SERVER") if configured else default_url(port)
    server = Server(url, api_key, named=False)
    reason = _cannot_run(server, spec, NAMED_PROBE_SECONDS if configured else PROBE_SECONDS)
    if reason == _ABSENT and not configured:
        return None  # no server at the default address: the ordinary in-process run
    if reason:
        notify(f"the flux2 server at {url} {reason}: running in-process")
        return None
    return server


def _checked_url(value: str, name: str) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidRequest(f"{name} takes the http(s):// URL of a flux2 server, e.g. http://127.0.0.1:2222 "
                             f"(got {value!r})")
    return value.strip().rstrip("/")


_ABSENT = "does not answer (nothing listens there)"


def _cannot_run(server: Server, spec: ModelSpec, timeout: float) -> str:
    """Why the server cannot take a request for ``spec`` ("" when it can)."""
    import httpx

    try:
        reply = httpx.get(f"{server.url}/model-info", headers=_headers(server), timeout=timeout)
    except httpx.ConnectError:
        return _ABSENT
    except httpx.HTTPError as error:
        return f"does not answer ({type(error).__name__})"
    if reply.status_code == 401:
        return "wants an API key (set FLUX2_API_KEY)"
    if reply.status_code != 200:
        return f"answered /model-info with HTTP {reply.status_code}"
    try:
        loaded = reply.json().get("model")
    except (ValueError, AttributeError):
        return "is not a flux2 server (its /model-info is not JSON)"
    if loaded != spec.display_name:
        return f"runs {loaded}, not {spec.display_name}"
    return ""


def _headers(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}


def request_body(request: GenerationRequest) -> dict[str, Any]:
    """The wire body for ``request``: every value already resolved (the seed drawn here), so the
    server makes exactly the images an in-process run would."""
    body: dict[str, Any] = {"prompt": request.prompt, "steps": request.steps, "seed": request.seed,
                            "batch": request.batch}
    if request.orientation is not None:
        body.update(orientation=request.orientation, size=request.size)
    else:
        body.update(width=request.width, height=request.height)
    for name in ("guidance", "negative_prompt", "strength", "cache"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.reference_images:
        body["input_images"] = [base64.b64encode(Path(ref.source).read_bytes()).decode("ascii")
                                for ref in request.reference_images]
    if request.mask is not None:
        body["mask_image"] = base64.b64encode(Path(request.mask.source).read_bytes()).decode("ascii")
    if request.mask is not None or request.expand is not None:  # the server derives the size from the image
        for name in ("orientation", "size", "width", "height"):
            body.pop(name, None)
        body["expand"] = request.expand
    return body


def generate(server: Server, request: GenerationRequest, output_dir: Path, *,
             on_step: StepCallback | None = None) -> tuple[list[SavedImage], float]:
    """Run ``request`` on ``server`` and write its images into ``output_dir``; the saved pairs and
    the server's generation time. Ctrl-C cancels the job on the server too."""
    import httpx

    headers = _headers(server)
    with httpx.Client(base_url=server.url, headers=headers,
                      timeout=httpx.Timeout(NAMED_PROBE_SECONDS, read=READ_SECONDS)) as client:
        reply = client.post("/jobs", json=request_body(request))
        if reply.status_code != 202:
            raise _refusal(reply.status_code, _error_text(reply), server)
        job = reply.json()["id"]
        try:
            result = _follow(client, job, on_step)
        except KeyboardInterrupt:
            try:
                client.delete(f"/jobs/{job}", timeout=2.0)
            except httpx.HTTPError:
                pass
            raise
        saved = []
        try:
            for entry in result["images"]:
                image = client.get(f"/images/{entry['filename']}")
                if image.status_code != 200:
                    raise GenerationError(f"the server made {entry['filename']} but does not serve it "
                                          f"(HTTP {image.status_code})")
                saved.append(_write_pair(image.content, entry, request, output_dir))
        except BaseException:
            for pair in saved:  # a whole batch or nothing, as a local run
                pair.path.unlink(missing_ok=True)
                pair.sidecar.unlink(missing_ok=True)
            raise
    return saved, float(result["generation_time"])


def _follow(client: Any, job: str, on_step: StepCallback | None) -> dict[str, Any]:
    """Read the job's events until it ends; the success body, or the job's error raised."""
    with client.stream("GET", f"/jobs/{job}/events") as stream:
        if stream.status_code != 200:
            raise GenerationError(f"the server's event stream answered HTTP {stream.status_code}")
        for event, data in _events(stream.iter_lines()):
            if event == "step" and on_step is not None:
                on_step(StepEvent(data["step"], data["total_steps"], data.get("batch", 1)))
            elif event == "done":
                return data["result"]
            elif event == "error":
                status = data.get("status") or 500
                if status == 499:
                    raise GenerationCancelled(0, 0)
                raise _refusal(status, data.get("error") or "the generation failed", None)
    raise GenerationError("the server closed the job's event stream before the job ended")


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-sent events as (name, JSON data)."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _error_text(reply: Any) -> str:
    try:
        return str(reply.json().get("error") or reply.text)
    except (ValueError, AttributeError):
        return reply.text[:200] or f"HTTP {reply.status_code}"


def _refusal(status: int, message: str, server: Server | None) -> Flux2Error:
    if status == 401 and server is not None:
        return InvalidRequest(f"the flux2 server at {server.url} refused the API key; set FLUX2_API_KEY")
    if status == 503:
        return Busy(message)
    if 400 <= status < 500:
        return InvalidRequest(message)
    return GenerationError(message)


def _write_pair(png: bytes, entry: dict[str, Any], request: GenerationRequest, output_dir: Path) -> SavedImage:
    path = output_dir / entry["filename"]
    sidecar = path.with_suffix(".prompt")
    timings = {name: float(value) for name, value in entry["timings"].items()}
    evaluations = entry.get("evaluations")
    text = sidecar_text(request, int(entry["seed"]), timings, evaluations).encode("utf-8")
    atomic_write(sidecar, lambda handle: handle.write(text))  # sidecar first: a PNG never appears without it
    try:
        atomic_write(path, lambda handle: handle.write(png))
    except BaseException:
        sidecar.unlink(missing_ok=True)
        raise
    return SavedImage(path=path, sidecar=sidecar, seed=int(entry["seed"]), timings=timings, evaluations=evaluations)
