"""Generation on Ray Serve (`flux2 serve --replicas N`), end to end over real HTTP with `tiny`.

One local Ray instance serves the whole session (conftest's ``ray_session``); this module
deploys one application (2 generation replicas at 1 CPU each, 1 encoder replica) and puts
the real aiohttp server in front of it. The server API tests reused at the top run against
it unchanged; the fault tests come last, as they kill replicas.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time

import pytest

from server_fixtures import TINY_PROMPT, LiveServer, assert_error
from serve_process import ServeProcess
# The spec's routes answer as with one process: these tests run here against the Ray backend.
from test_server_api import (  # noqa: F401 - collected here with this module's server
    generated,
    test_a_client_that_disconnects_cancels_its_generation,
    test_delete_cancels_the_running_job_only,
    test_generate_returns_the_spec_body_and_serves_the_images,
    test_jobs_stream_their_events_in_order,
    test_openapi_describes_every_route,
    test_reference_images_are_decoded_and_handed_to_the_engine,
    test_status_answers_while_a_generation_runs,
    test_unknown_routes_and_methods,
    test_web_ui_and_its_static_files_are_served_offline,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
pytest.importorskip("ray")

REPLICAS = 2
ARGS = {"model": "tiny", "replicas": REPLICAS, "encoder_replicas": 1, "cpus_per_replica": 1}


@pytest.fixture(scope="module")
def cluster(ray_session):
    from flux2cli.pipeline.registry import get_model
    from flux2cli.scale.cluster import RayCluster

    with RayCluster() as cluster:
        cluster.start(get_model("tiny"), ARGS, preview_every=0.25)
        yield cluster


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    from flux2cli.server.config import ServerConfig

    with LiveServer(cluster.engine, ServerConfig(output_dir=tmp_path_factory.mktemp("ray-out"))) as live:
        yield live


def _submit(server, **body) -> str:
    reply = server.call("POST", "/jobs", {"prompt": TINY_PROMPT, **body})
    assert reply.status == 202, reply.body
    return reply.json()["id"]


def _job(server, job_id: str) -> dict:
    return server.call("GET", f"/jobs/{job_id}").json()


def _wait(what: str, predicate, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _running_at_step(server, job_id: str, step: int = 1) -> bool:
    job = _job(server, job_id)
    return job["state"] == "running" and job["progress"]["step"] >= step


def _finish(server, *job_ids: str) -> list[dict]:
    return [list(server.events(job_id))[-1] for job_id in job_ids]


def _ray_processes() -> set[str]:
    """Pids of Serve's actor processes on this machine (replicas, the controller); their titles
    change with the method they run, their pids do not."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if "ray::Serve" in line}


def _kill_replica(deployment: str) -> None:
    """Kill one replica's process of ``deployment`` (Serve restarts it)."""
    import ray

    name = next(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                if actor["name"].startswith(f"SERVE_REPLICA::flux2#{deployment}#"))
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=False)


# -- what several replicas change -------------------------------------------------------


def test_model_info_and_idle_status_add_the_replicas(server):
    info = server.call("GET", "/model-info").json()
    assert info["model"] == "flux2-tiny" and info["description"] == f"flux2-tiny with {info['encoder']}"
    assert info["replicas"] == {"ready": 2, "total": 2, "encoder": {"ready": 1, "total": 1}}
    assert server.call("GET", "/status").json() == {
        "generating": False, "prompt": None, "batch": 0, "current": 0, "step": 0, "total_steps": 0, "queued": 0,
        "running": [], "replicas": info["replicas"]}


def test_two_jobs_run_at_once_and_generate_is_refused_only_when_both_replicas_are_busy(server):
    first = _submit(server, prompt="first", steps=40, seed=1)
    _wait("the first job to run", lambda: _running_at_step(server, first))
    alone = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 2, "seed": 2})
    assert alone.status == 200, alone.body  # the other replica was free

    second = _submit(server, prompt="second", steps=40, seed=3)
    status = _wait("both jobs to run at once", lambda: (
        body if len((body := server.call("GET", "/status").json())["running"]) == 2 else None))
    assert {entry["prompt"] for entry in status["running"]} == {"first", "second"}
    assert all(set(entry) == {"prompt", "batch", "current", "step", "total_steps"} for entry in status["running"])
    assert status["generating"] is True and status["prompt"] == "first"  # the oldest running job
    assert _job(server, first)["state"] == _job(server, second)["state"] == "running"  # overlapping intervals

    busy = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 2})
    assert "all 2 replicas are busy" in assert_error(busy, 503)
    assert int(busy.headers["Retry-After"]) >= 1
    third = server.call("POST", "/jobs", {"prompt": "third", "steps": 2})
    assert third.status == 202 and third.json()["position"] == 1
    assert server.call("GET", "/status").json()["queued"] == 1
    assert [event["event"] for event in _finish(server, first, second, third.json()["id"])] == ["done"] * 3


def test_cancel_reaches_the_replica(server):
    cancelled = _submit(server, steps=50, seed=4)
    _wait("the job to run", lambda: _running_at_step(server, cancelled, 2))
    assert server.call("DELETE", f"/jobs/{cancelled}").status in (200, 202)
    last = _finish(server, cancelled)[0]
    assert last["data"]["state"] == "cancelled" and _job(server, cancelled)["progress"]["step"] < 50
    # Both replicas take the next two jobs at once: had the cancel not reached its replica,
    # one of them would wait there for the cancelled job's ~48 remaining steps.
    pair = [_submit(server, steps=50, seed=seed) for seed in (5, 6)]
    steps = _wait("both jobs to run", lambda: (
        found if min(found := [_job(server, job_id)["progress"]["step"] for job_id in pair]) >= 1 else None))
    assert max(steps) < 25, steps
    for job_id in pair:
        server.call("DELETE", f"/jobs/{job_id}")
    assert [event["data"]["state"] for event in _finish(server, *pair)] == ["cancelled"] * 2


def test_images_are_pixel_identical_to_the_in_process_engine(server, tiny_engine):
    import numpy as np
    from PIL import Image

    from flux2cli.pipeline.request import GenerationRequest
    from standins import one_torch_thread

    body = {"prompt": TINY_PROMPT, "steps": 3, "seed": 7, "batch": 2}
    reply = server.call("POST", "/generate", body)
    assert reply.status == 200, reply.body
    remote = [Image.open(io.BytesIO(server.call("GET", f"/images/{image['filename']}").body))
              for image in reply.json()["images"]]
    with one_torch_thread():  # as a replica at 1 CPU runs (Ray sets OMP_NUM_THREADS to its CPUs)
        local = tiny_engine.generate(GenerationRequest.create(model="tiny", **body))
    for there, here in zip(remote, local, strict=True):
        assert np.array_equal(np.asarray(there), np.asarray(here.image))
    sidecar = server.config.output_dir / reply.json()["images"][0]["filename"].replace(".png", ".prompt")
    assert "# Seed: 7" in sidecar.read_text()  # written by the front door, as in process


def test_previews_come_back_from_the_replica(server):
    job_id = _submit(server, steps=12, seed=8)
    events = list(server.events(job_id))
    previews = [event for event in events if event["event"] == "preview"]
    assert events[-1]["event"] == "done" and previews
    assert all(event["data"]["image"] is None or event["data"]["image"].startswith("data:image/")
               for event in previews)


def test_flux2_serve_command_joins_the_cluster_and_leaves_it_running(server, ray_session, tmp_path):
    """The console command with --ray-address: uses the running application, serves, and
    on SIGTERM exits 0 leaving the cluster (and its application) as it found them."""
    from flux2cli.scale.cluster import _app_status

    before = _ray_processes()
    assert len(before) >= 4  # the controller, 2 generation replicas and the encoder replica
    process = ServeProcess(["--model", "tiny", "--replicas", "2", "--cpus-per-replica", "1", "--port", "0",
                            "--output-dir", str(tmp_path), "--ray-address", ray_session])
    try:
        process.wait_ready(timeout=180)
        status, body = process.call("GET", "/model-info")
        assert status == 200 and json.loads(body)["replicas"]["total"] == 2
        status, body = process.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 2, "seed": 9})
        assert status == 200, body
        assert (tmp_path / json.loads(body)["images"][0]["filename"]).is_file()
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(60) == 0
        assert "stopped" in "".join(process.stderr)
        # It deployed nothing, so it leaves no replica or worker process behind on the cluster.
        _wait("the cluster's processes to be as before", lambda: _ray_processes() == before, timeout=30)
    finally:
        process.stop()
    assert _app_status("flux2").status == "RUNNING"
    assert server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1}).status == 200


def test_missing_resources_are_one_line_before_anything_is_deployed(cluster):
    from flux2cli.scale.cluster import ScaleError

    with pytest.raises(ScaleError, match=r"need 3 CPUs \(the cluster has 2\); lower --replicas"):
        cluster.check_resources({"replicas": 3, "cpus_per_replica": 1})
    with pytest.raises(ScaleError, match=r"need 3 GPUs \(the cluster has 0\)"):
        cluster.check_resources({"replicas": 2, "cpus_per_replica": 0, "gpus_per_replica": 1})
    cluster.check_resources(ARGS)


# -- faults (last: they kill replicas) ------------------------------------------------------


def test_a_killed_replica_costs_only_its_job_and_a_dead_encoder_answers_503_until_it_is_back(server):
    def replicas() -> dict:
        return server.call("GET", "/status").json()["replicas"]

    pair = [_submit(server, steps=50, seed=seed) for seed in (10, 11)]
    _wait("both jobs to run", lambda: all(_running_at_step(server, job_id) for job_id in pair))
    _kill_replica("Generator")
    outcomes = {event["data"]["state"]: event["data"] for event in _finish(server, *pair)}
    assert set(outcomes) == {"done", "error"}, outcomes
    assert "the replica running this generation stopped" in outcomes["error"]["error"]
    assert outcomes["error"]["status"] == 500
    _wait("/status to show one ready replica", lambda: replicas()["ready"] < 2, timeout=30)
    after = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 2})
    assert after.status == 200, after.body  # the server keeps serving on the other replica

    _kill_replica("TextEncoder")
    _wait("/status to show no encoder", lambda: replicas()["encoder"]["ready"] == 0, timeout=30)
    down = server.call("POST", "/generate", {"prompt": "a prompt no replica has encoded", "steps": 2})
    assert "text-encoder deployment" in assert_error(down, 503)

    _wait("Ray Serve to bring both replicas back",
          lambda: replicas() == {"ready": 2, "total": 2, "encoder": {"ready": 1, "total": 1}}, timeout=240)
    back = server.call("POST", "/generate", {"prompt": "a prompt no replica has encoded", "steps": 2})
    assert back.status == 200, back.body
