"""Queue memory: small uploads that decode huge. The queue counts the decoded pixels its
waiting jobs hold against a budget, so memory stays bounded whatever the files' sizes.

The record: four 72 KB flat 5376x3072 PNGs hold about 250 MB once decoded; eight queued
jobs took a server from 0.44 to 2.9 GB (issue 18).
"""

from __future__ import annotations

import pytest

from flux2cli.server.config import ServerConfig
from guarded_server import GuardedServer
from images import data_url, png_bytes
from server_fixtures import FakeEngine, assert_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SIDE = 64
BUDGET = 3 * SIDE * SIDE  # three waiting references of 64x64


@pytest.fixture
def held(tmp_path):
    engine = FakeEngine(hold=True)
    config = ServerConfig(output_dir=tmp_path / "out", queue_size=8, reference_pixel_budget=BUDGET)
    with GuardedServer(engine, config) as live:
        yield live, engine
        engine.release.set()


def _job(server, *, image: bool = True, size: int = SIDE):
    body = {"prompt": "x", "steps": 2}
    if image:
        body["input_image"] = data_url(png_bytes((size, size)))
    return server.call("POST", "/jobs", body)


def test_waiting_jobs_hold_no_more_decoded_pixels_than_the_budget(held):
    server, engine = held
    assert _job(server).status == 202  # runs (held): its pixels are the running job's, not the queue's
    server.wait_until(lambda: server.worker.running is not None, what="the first job to run")
    waiting = [_job(server) for _ in range(3)]
    assert all(reply.status == 202 for reply in waiting)  # the budget: three
    reply = _job(server)
    message = assert_error(reply, 503)  # (the guard's idle check waits for the release below)
    assert "megapixels of reference images" in message and reply.headers["Retry-After"]
    assert _job(server, image=False).status == 202  # jobs without references still queue
    # Cancelling a waiting job gives its pixels back.
    assert server.call("DELETE", f"/jobs/{waiting[0].json()['id']}").status == 200
    assert _job(server).status == 202
    engine.release.set()


def test_one_job_alone_is_never_refused_for_its_size(held):
    server, _ = held
    assert _job(server, image=False).status == 202
    server.wait_until(lambda: server.worker.running is not None, what="a job to run")
    assert _job(server, size=2 * SIDE).status == 202  # 4x the per-reference share, and the queue was empty


def test_the_queue_size_is_bounded_on_the_command_line():
    from console_script import run

    result = run("serve", "--queue-size", "1000", "--model", "tiny", "--port", "0")
    assert result.returncode == 2 and "1000" in result.stderr and "Traceback" not in result.stderr
