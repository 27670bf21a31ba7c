"""The REST API over real HTTP on 127.0.0.1, with the real embedded `tiny` model.

One engine is loaded per session (server_fixtures caches it); each test talks to an app
built by ``init_app`` and served by ``make_runner`` like `flux2 serve` does.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import statistics
import threading
import time

import pytest

from flux2cli.server.config import MAX_BODY_BYTES, ServerConfig
from flux2cli.server.openapi import openapi_document
from flux2cli.server.routes import STATIC_DIR
from images import data_url, png_bytes
from server_fixtures import TINY_PROMPT, LiveServer, assert_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FILENAME = re.compile(r"flux2_\d{8}_\d{6}_[0-9a-f]{8}\.png")


@pytest.fixture(scope="module")
def generated(server):
    """One real /generate call (batch 2, fixed seed), shared by the tests that read it."""
    reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 2, "seed": 7, "batch": 2,
                                              "strength": 0.75, "orientation": "landscape", "size": "1mp"})
    assert reply.status == 200, reply.body
    return reply.json()


# -- the spec's routes ---------------------------------------------------------------


def test_web_ui_and_its_static_files_are_served_offline(server):
    page = server.call("GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert '<script src="/static/app.js"' in page.text
    script = server.call("GET", "/static/app.js")
    assert script.status == 200 and "javascript" in script.headers["Content-Type"]
    assert server.call("GET", "/static/style.css").headers["Content-Type"].startswith("text/css")
    for path in STATIC_DIR.iterdir():  # no CDN, no web fonts: the page works without a network
        assert not re.search(r"https?://", path.read_text()), path.name
    assert_error(server.call("GET", "/static/../app.py"), 404)
    assert_error(server.call("GET", "/static/%2e%2e/app.py"), 404)


def test_model_info_names_the_loaded_model(server, tiny_engine):
    reply = server.call("GET", "/model-info")
    assert reply.status == 200
    assert reply.json() == tiny_engine.describe()
    assert reply.json()["model"] == "flux2-tiny"
    assert set(reply.json()) == {"model", "encoder", "description"}


def test_status_when_idle(server):
    reply = server.call("GET", "/status")
    assert reply.status == 200
    assert reply.json() == {"generating": False, "prompt": None, "batch": 0, "current": 0,
                            "step": 0, "total_steps": 0, "queued": 0}


def test_generate_returns_the_spec_body_and_serves_the_images(server, generated):
    assert set(generated) == {"success", "images", "generation_time"}
    assert generated["success"] is True and generated["generation_time"] > 0
    assert [image["seed"] for image in generated["images"]] == [7, 8]
    from PIL import Image

    for image in generated["images"]:
        assert set(image) == {"filename", "seed", "timings"}
        assert set(image["timings"]) == {"encoding", "diffusion", "save", "total"}
        assert FILENAME.fullmatch(image["filename"])
        reply = server.call("GET", f"/images/{image['filename']}")
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "image/png"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert Image.open(io.BytesIO(reply.body)).size == (80, 48)  # tiny's 1 MP landscape
        sidecar = server.config.output_dir / image["filename"].replace(".png", ".prompt")
        assert f"# Seed: {image['seed']}" in sidecar.read_text()


def test_reference_images_are_decoded_and_handed_to_the_engine(server):
    cases = [data_url(png_bytes((32, 24))), base64.b64encode(png_bytes((32, 24), fmt="JPEG")).decode(),
             data_url(png_bytes((32, 24), fmt="WEBP"), "image/webp")]
    for image in cases:
        reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1, "input_image": image,
                                                  "strength": 0.5})
        assert reply.status == 200 and reply.json()["success"] is True, reply.body[:200]


def test_a_4mp_png_in_base64_fits_under_the_body_cap(server):
    from PIL import Image

    noise = Image.frombytes("RGB", (2048, 2048), os.urandom(2048 * 2048 * 3))  # incompressible
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG", compress_level=1)
    body = {"prompt": TINY_PROMPT, "steps": 1, "input_image": data_url(buffer.getvalue())}
    assert len(json.dumps(body)) > 16 * 1024 * 1024
    reply = server.call("POST", "/generate", body)
    assert reply.status == 200 and reply.json()["success"] is True, reply.body[:200]
    # The worst case, a 4 MP RGBA PNG stored without compression, fits too.
    assert (2048 * 2048 * 4 + 2048 + 1024) * 4 / 3 + 1024 < MAX_BODY_BYTES


def test_two_simultaneous_generate_calls_one_gets_503(server):
    barrier = threading.Barrier(2)
    replies = []

    def call():
        barrier.wait()
        replies.append(server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 3, "seed": 1}))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(reply.status for reply in replies) == [200, 503]
    busy = next(reply for reply in replies if reply.status == 503)
    assert "another generation is in progress" in assert_error(busy, 503)
    assert int(busy.headers["Retry-After"]) >= 1


def test_status_answers_while_a_generation_runs(server):
    done = threading.Event()
    result = []

    def generate():
        result.append(server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 12, "seed": 3}))
        done.set()

    thread = threading.Thread(target=generate)
    thread.start()
    samples = []  # (latency, body) of /status calls answered before /generate returned
    while not done.is_set():
        start = time.perf_counter()
        reply = server.call("GET", "/status", timeout=30)
        latency = time.perf_counter() - start
        if not done.is_set():
            samples.append((latency, reply.json()))
        time.sleep(0.05)
    thread.join()
    assert result[0].status == 200
    busy = [body for _, body in samples if body["generating"]]
    assert busy, "no /status answer arrived while the generation ran"
    assert all(body["prompt"] == TINY_PROMPT and body["batch"] == 1 and body["current"] == 1
               and body["total_steps"] == 12 and 0 <= body["step"] <= 12 for body in busy)
    assert any(body["step"] >= 1 for body in busy)
    latencies = [latency for latency, body in samples if body["generating"]]
    print(f"\n/status during generation: {len(latencies)} answers, "
          f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


# -- the job queue -----------------------------------------------------------------


def _submit(server, **body) -> str:
    reply = server.call("POST", "/jobs", {"prompt": TINY_PROMPT, **body})
    assert reply.status == 202, reply.body
    created = reply.json()
    assert created["state"] == "queued" and created["position"] >= 1
    assert reply.headers["Location"] == created["status_url"] == f"/jobs/{created['id']}"
    return created["id"]


def test_jobs_stream_their_events_in_order(server):
    first, second = _submit(server, steps=3, seed=11), _submit(server, steps=2, seed=12)
    for job_id, steps in ((first, 3), (second, 2)):
        events = list(server.events(job_id))
        names = [event["event"] for event in events]
        queued = names.count("queued")
        assert queued >= 1 and names[:queued] == ["queued"] * queued
        positions = [event["data"]["position"] for event in events[:queued]]
        assert positions == sorted(positions, reverse=True) and positions[-1] == 1
        # previews (this server draws them) come between steps, never before the first
        flow = [name for name in names[queued:] if name != "preview"]
        assert flow == ["started"] + ["step"] * steps + ["done"]
        assert names.index("step") < (names.index("preview") if "preview" in names else len(names))
        assert [event["data"]["step"] for event in events if event["event"] == "step"] == list(range(1, steps + 1))
        assert [event["id"] for event in events] == list(range(1, len(events) + 1))
        result = events[-1]["data"]["result"]
        assert result["success"] is True and len(result["images"]) == 1
        job = server.call("GET", f"/jobs/{job_id}").json()
        assert job["state"] == "done" and job["result"] == result
        assert job["progress"] == {"step": steps, "total_steps": steps, "current": 1, "batch": 1}
        assert server.call("GET", f"/images/{result['images'][0]['filename']}").status == 200


def test_delete_cancels_the_running_job_only(server):
    long, short = _submit(server, steps=50, seed=1), _submit(server, steps=2, seed=2)
    events = server.events(long)
    for event in events:
        if event["event"] == "step":
            break
    reply = server.call("DELETE", f"/jobs/{long}")
    assert reply.status in (200, 202) and reply.json()["cancel_requested"] is True
    rest = list(events)
    assert rest[-1]["event"] == "error"
    assert rest[-1]["data"]["state"] == "cancelled" and rest[-1]["data"]["status"] == 499
    job = server.call("GET", f"/jobs/{long}").json()
    assert job["state"] == "cancelled" and job["progress"]["step"] < 50 and job["result"] is None
    assert list(server.events(short))[-1]["event"] == "done"


def test_full_queue_answers_503(tiny_engine, tmp_path):
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path, queue_size=1)) as small:
        running = _submit(small, steps=50)
        small.wait_until(lambda: small.worker.running is not None, what="the first job to start")
        queued = _submit(small, steps=2)
        full = small.call("POST", "/jobs", {"prompt": TINY_PROMPT})
        assert "queue is full" in assert_error(full, 503)
        assert int(full.headers["Retry-After"]) >= 1
        busy = small.call("POST", "/generate", {"prompt": TINY_PROMPT})
        assert int(busy.headers["Retry-After"]) >= 1 and assert_error(busy, 503)
        assert small.call("DELETE", f"/jobs/{queued}").json()["state"] == "cancelled"
        assert small.call("DELETE", f"/jobs/{running}").status in (200, 202)
        assert list(small.events(running))[-1]["data"]["state"] == "cancelled"


def test_a_client_that_disconnects_cancels_its_generation(server):
    body = json.dumps({"prompt": TINY_PROMPT, "steps": 50, "seed": 5}).encode()
    before = set(os.listdir(server.config.output_dir))
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    server.wait_until(lambda: server.worker.running is not None and server.worker.running.step >= 1,
                      what="the generation to start")
    sock.close()
    server.wait_until(lambda: server.worker.running is None, timeout=30, what="the generation to stop")
    job = server.worker.history[-1]
    assert job.kind == "generate" and job.state == "cancelled"
    assert job.step < 50
    assert set(os.listdir(server.config.output_dir)) == before  # nothing was saved


# -- errors ---------------------------------------------------------------------------
# What the server refuses (bad fields, bodies, images, paths, hosts, origins, keys) is
# catalogued in tests/abuse/.


def test_a_failed_generation_answers_500_without_details(server, tiny_engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA kernel failed in /home/user/secret/model.py")

    monkeypatch.setattr(tiny_engine, "pipe", broken)
    reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1})
    message = assert_error(reply, 500)
    assert "generation failed" in message and "secret" not in reply.text
    assert server.call("GET", "/status").json()["generating"] is False


def test_unknown_routes_and_methods(server):
    assert_error(server.call("GET", "/nope"), 404)
    reply = server.call("DELETE", "/status")
    assert "GET" in assert_error(reply, 405) and "GET" in reply.headers["Allow"]
    assert server.call("HEAD", "/status").status == 200


def test_openapi_describes_every_route(server):
    reply = server.call("GET", "/openapi.json")
    assert reply.status == 200
    document = reply.json()
    from flux2cli.server.loras import offered

    assert document == json.loads(json.dumps(openapi_document(server.engine.spec, loras=offered(server.engine))))
    routes = set()
    for route in server.app.router.routes():
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if "prefix" in info:
            path = info["prefix"].rstrip("/") + "/{filename}"
        if route.method != "HEAD":
            routes.add((path, route.method.lower()))
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    for path in ("/generate", "/jobs"):
        assert document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    assert set(document["components"]["schemas"]["GenerateRequest"]["properties"]) >= {
        "prompt", "orientation", "size", "steps", "seed", "batch", "input_image", "strength"}


def test_exposure_warning_only_when_reachable_without_a_key():
    assert ServerConfig(host="127.0.0.1").exposure_warning() is None
    assert ServerConfig(host="localhost").exposure_warning() is None
    assert ServerConfig(host="::1").exposure_warning() is None
    assert "API key" in ServerConfig(host="0.0.0.0").exposure_warning()
    assert ServerConfig(host="0.0.0.0", api_key="k").exposure_warning() is None
    assert not ServerConfig(host="0.0.0.0").loopback
