"""Fast tests of the worker, the queue and the error mapping, with a fake engine.

They run over real HTTP like the others; the same paths are covered with the real tiny
engine in test_server_api.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flux2cli.errors import EncoderError, GenerationError, OutOfMemory
from flux2cli.pipeline.events import StepEvent
from flux2cli.pipeline.request import GenerationRequest
from flux2cli.server.config import ServerConfig
from flux2cli.server.worker import Job
from server_fixtures import FakeEngine, LiveServer, assert_error

pytestmark = pytest.mark.timeout(120)


def _server(tmp_path: Path, engine: FakeEngine, **config) -> LiveServer:
    return LiveServer(engine, ServerConfig(output_dir=tmp_path / "out", **config))


def _job(server: LiveServer, prompt: str, steps: int = 3) -> str:
    reply = server.call("POST", "/jobs", {"prompt": prompt, "steps": steps, "seed": 1})
    assert reply.status == 202, reply.body
    assert reply.headers["Location"] == f"/jobs/{reply.json()['id']}"
    return reply.json()["id"]


def _running(server: LiveServer, prompt: str) -> None:
    server.wait_until(lambda: server.worker.running is not None and server.worker.running.request.prompt == prompt
                      and server.worker.running.step >= 1, what=f"{prompt!r} to run")


def test_queue_runs_jobs_in_order_and_reports_positions(tmp_path):
    engine = FakeEngine(hold=True)
    with _server(tmp_path, engine) as server:
        first = _job(server, "first")
        _running(server, "first")
        second, third = _job(server, "second"), _job(server, "third")
        assert server.call("GET", f"/jobs/{second}").json()["position"] == 1
        assert server.call("GET", f"/jobs/{third}").json()["position"] == 2
        status = server.call("GET", "/status").json()
        assert status == {"generating": True, "prompt": "first", "batch": 1, "current": 1,
                          "step": 1, "total_steps": 3, "queued": 2}
        engine.release.set()
        events = list(server.events(third))
        assert [e["event"] for e in events][:3] == ["queued", "queued", "started"]
        assert [e["data"]["position"] for e in events[:2]] == [2, 1]
        assert events[-1]["event"] == "done"
        assert [r.prompt for r in engine.requests] == ["first", "second", "third"]
        assert all(server.call("GET", f"/jobs/{j}").json()["state"] == "done" for j in (first, second, third))


def test_full_queue_and_busy_generate_answer_503_with_retry_after(tmp_path):
    engine = FakeEngine(hold=True)
    with _server(tmp_path, engine, queue_size=2) as server:
        running = _job(server, "running", steps=10)
        _running(server, "running")
        waiting = [_job(server, "a"), _job(server, "b")]
        full = server.call("POST", "/jobs", {"prompt": "c"})
        assert "queue is full" in assert_error(full, 503)
        assert int(full.headers["Retry-After"]) >= 1
        busy = server.call("POST", "/generate", {"prompt": "now"})
        assert "another generation" in assert_error(busy, 503)
        assert int(busy.headers["Retry-After"]) >= 1
        for job_id in [*waiting, running]:  # the queued ones first, or they would start
            server.call("DELETE", f"/jobs/{job_id}")
        server.wait_until(lambda: not server.worker.busy, what="the worker to be idle")
        assert [r.prompt for r in engine.requests] == ["running"]  # the queued ones never ran


def test_delete_cancels_only_that_job(tmp_path):
    engine = FakeEngine(hold=True)
    with _server(tmp_path, engine) as server:
        running = _job(server, "running", steps=5)
        _running(server, "running")
        queued, other = _job(server, "queued"), _job(server, "other")

        reply = server.call("DELETE", f"/jobs/{queued}")
        assert reply.status == 200 and reply.json()["state"] == "cancelled"
        assert server.call("GET", f"/jobs/{other}").json()["position"] == 1

        reply = server.call("DELETE", f"/jobs/{running}")
        assert reply.status == 202 and reply.json()["cancel_requested"] is True
        events = list(server.events(running))
        assert events[-1]["event"] == "error"
        assert events[-1]["data"] == {"state": "cancelled", "error": "generation cancelled at step 1/5", "status": 499}

        engine.release.set()
        assert list(server.events(other))[-1]["event"] == "done"
        assert [r.prompt for r in engine.requests] == ["running", "other"]
        assert "already finished" in assert_error(server.call("DELETE", f"/jobs/{other}"), 409)
        assert_error(server.call("DELETE", "/jobs/no-such-job"), 404)
        assert_error(server.call("GET", "/jobs/no-such-job/events"), 404)


def test_events_resume_after_last_event_id(tmp_path):
    with _server(tmp_path, FakeEngine()) as server:
        job_id = _job(server, "resume", steps=4)
        everything = list(server.events(job_id))
        rest = list(server.events(job_id, headers={"Last-Event-ID": "3"}))
        assert rest == everything[3:]
        assert [e["id"] for e in everything] == list(range(1, len(everything) + 1))


@pytest.mark.parametrize(("failure", "status", "words"), [
    (GenerationError("generation failed (RuntimeError); run with FLUX2_DEBUG=1 for details"), 500, "generation failed"),
    (OutOfMemory("the device ran out of memory; try a smaller size"), 507, "out of memory"),
    (EncoderError("the remote encoder did not answer"), 502, "encoder"),
    (RuntimeError("boom in /home/someone/secret.py"), 500, "unexpectedly"),
])
def test_generation_failures_map_to_their_status(tmp_path, failure, status, words):
    with _server(tmp_path, FakeEngine(fail=failure)) as server:
        message = assert_error(server.call("POST", "/generate", {"prompt": "x", "steps": 1}), status)
        assert words in message and "secret" not in message
        job_id = _job(server, "x", steps=1)
        last = list(server.events(job_id))[-1]
        assert last["event"] == "error" and last["data"]["status"] == status
        assert server.call("GET", "/status").json()["generating"] is False


def test_shutdown_cancels_the_running_generation_and_answers_503(tmp_path):
    engine = FakeEngine(hold=True)
    server = _server(tmp_path, engine).__enter__()
    replies = []
    thread = threading.Thread(target=lambda: replies.append(server.call("POST", "/generate", {"prompt": "long"})))
    thread.start()
    _running(server, "long")
    queued = _job(server, "queued")
    worker = server.worker  # the app is gone once the server stops
    server.stop()
    thread.join(30)
    assert "shutting down" in assert_error(replies[0], 503)
    assert [r.prompt for r in engine.requests] == ["long"]
    refused = worker.get(queued)  # refused with the same message, never run (engine.requests above)
    assert refused.state == "error" and "shutting down" in str(refused.error)


def test_current_counts_images_when_an_engine_denoises_them_one_by_one():
    request = GenerationRequest.create("x", model="tiny", steps=2, batch=3, seed=0)
    job = Job(request=request, kind="job")
    job.state = "running"
    seen = []
    for _image in range(3):
        for step in (1, 2):
            job.on_step(StepEvent(step, 2, 1))
            seen.append(job.current)
    assert seen == [1, 1, 2, 2, 3, 3]
    together = Job(request=request, kind="job")
    together.state = "running"
    together.on_step(StepEvent(1, 2, 3))
    together.on_step(StepEvent(2, 2, 3))
    assert together.current == 1


def test_finished_jobs_are_forgotten_beyond_the_limit(tmp_path):
    with _server(tmp_path, FakeEngine()) as server:
        server.worker.keep_finished = 2
        ids = [_job(server, f"p{i}", steps=1) for i in range(4)]
        server.wait_until(lambda: not server.worker.busy, what="the worker to be idle")
        assert server.call("GET", f"/jobs/{ids[0]}").status == 404
        assert server.call("GET", f"/jobs/{ids[-1]}").json()["state"] == "done"


def test_uploaded_images_reach_the_engine_as_reference_images(tmp_path):
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (32, 24), (0, 0, 255, 128)).save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    engine = FakeEngine()
    with _server(tmp_path, engine) as server:
        assert server.call("POST", "/generate", {"prompt": "edit", "steps": 1, "input_image": data_url,
                                                 "strength": 0.5}).status == 200
        assert server.call("POST", "/generate", {"prompt": "edit", "steps": 1,
                                                 "input_image": data_url.split(",", 1)[1]}).status == 200
        assert server.call("POST", "/generate", {"prompt": "plain", "steps": 1, "strength": 0.75}).status == 200
    with_strength, default_strength, plain = engine.requests
    (reference,) = with_strength.reference_images
    assert reference.source == "upload"
    assert reference.image.size == (32, 24) and reference.image.mode == "RGB"
    assert with_strength.strength == 0.5
    assert default_strength.strength == 0.75  # the spec's default, applied because an image was given
    assert plain.reference_images == () and plain.strength is None  # no image: strength is unused


def test_job_states_are_an_enum_that_travels_as_plain_strings(tmp_path):
    import json

    from flux2cli.server.worker import DONE, QUEUED, JobState

    assert json.dumps({"state": QUEUED}) == '{"state": "queued"}' and f"{DONE}" == str(DONE) == "done"
    assert [state.value for state in JobState] == ["queued", "running", "done", "error", "cancelled"]
    engine = FakeEngine()
    with _server(tmp_path, engine) as server:
        job = _job(server, "enum", steps=1)
        events = list(server.events(job))
        assert [e["data"]["state"] for e in events if "state" in e["data"]][-1] == "done"
        assert server.call("GET", f"/jobs/{job}").json()["state"] == "done"
        assert server.call("DELETE", f"/jobs/{job}").json()["error"] == "the job has already finished (done)"


def test_generations_run_on_the_one_worker_thread(tmp_path):
    import threading

    seen = []
    engine = FakeEngine()
    real = engine.generate_and_save

    def recording(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    engine.generate_and_save = recording
    with _server(tmp_path, engine) as server:
        for i in range(3):
            _job(server, f"t{i}", steps=1)
        server.wait_until(lambda: len(seen) == 3 and not server.worker.busy, what="three jobs")
    assert len(set(seen)) == 1 and seen[0].startswith("flux2-generation")
