"""Previews: the image as it forms, on a job's event stream, over HTTP with the tiny model."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from flux2cli.server.config import ServerConfig
from server_fixtures import TINY_PROMPT, LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _decode(data_url: str) -> Image.Image:
    head, _, payload = data_url.partition(",")
    assert head == "data:image/webp;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")


@pytest.fixture(scope="module")
def every_step(tiny_engine, tmp_path_factory):
    """A server that may send a preview at every step (the default waits 0.25 s between two)."""
    config = ServerConfig(output_dir=tmp_path_factory.mktemp("out"), preview_every=0.0)
    with LiveServer(tiny_engine, config) as live:
        yield live


def _job_events(server, body: dict) -> list[dict]:
    reply = server.call("POST", "/jobs", body)
    assert reply.status == 202, reply.body[:300]
    return list(server.events(reply.json()["id"]))


def test_preview_events_decode_and_approach_the_final_image(every_step):
    events = _job_events(every_step, {"prompt": TINY_PROMPT, "steps": 12, "seed": 8, "orientation": "square"})
    previews = [e["data"] for e in events if e["event"] == "preview"]
    assert [p["step"] for p in previews] == list(range(2, 12))  # one a step; none before an estimate exists
    assert all(p["total_steps"] == 12 for p in previews)
    frames = [_decode(p["image"]) for p in previews]
    assert all(max(frame.size) <= 256 for frame in frames)
    done = events[-1]
    assert done["event"] == "done"
    name = done["data"]["result"]["images"][0]["filename"]
    final = Image.open(io.BytesIO(every_step.call("GET", f"/images/{name}").body)).convert("RGB")
    target = np.asarray(final.resize(frames[0].size), dtype=float)
    distances = [np.abs(np.asarray(frame, dtype=float) - target).mean() for frame in frames]
    assert distances[-1] < distances[0], distances
    assert len({frame.tobytes() for frame in frames}) > 2  # the frames change as it forms


def test_a_request_can_ask_for_no_previews(every_step):
    events = _job_events(every_step, {"prompt": TINY_PROMPT, "steps": 6, "preview": False})
    assert events[-1]["event"] == "done"
    assert not [e for e in events if e["event"] == "preview"]
    reply = every_step.call("POST", "/jobs", {"prompt": TINY_PROMPT, "preview": "no"})
    assert reply.status == 400 and "preview must be true or false" in reply.json()["error"]


def test_a_server_can_send_none(tiny_engine, tmp_path):
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path, preview_every=None)) as live:
        events = _job_events(live, {"prompt": TINY_PROMPT, "steps": 6})
    assert events[-1]["event"] == "done"
    assert not [e for e in events if e["event"] == "preview"]


def test_only_the_newest_preview_keeps_its_image_and_a_finished_job_none(every_step):
    reply = every_step.call("POST", "/jobs", {"prompt": TINY_PROMPT, "steps": 8})
    job = reply.json()["id"]
    events = list(every_step.events(job))
    assert events[-1]["event"] == "done"
    replay = [e for e in every_step.events(job) if e["event"] == "preview"]  # Last-Event-ID-free replay
    assert replay and all(e["data"]["image"] is None for e in replay)
    assert every_step.call("GET", f"/jobs/{job}").json()["preview"] is None


def test_the_shipped_linear_map_is_what_the_fit_script_finds():
    """scripts/fit_preview.py fitted tiny's latent_rgb.json against its VAE's decode; a small
    refit lands near the stored map and its stated mean error (34/255 per channel)."""
    import sys
    from pathlib import Path

    from flux2cli.pipeline.preview import LinearMap
    from flux2cli.pipeline.registry import get_model

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import fit_preview

    folder = get_model("tiny").local_dir
    shipped = LinearMap.read(folder)
    assert shipped is not None and shipped.mean_error < 40
    refit = fit_preview.fit(folder, images=24, seed=1)
    assert abs(refit.mean_error - shipped.mean_error) < 6, (refit.mean_error, shipped.mean_error)
    colours = np.eye(4)  # each latent channel alone: the two maps colour it alike
    shipped_rgb = np.asarray(shipped.weights) @ colours.T
    refit_rgb = np.asarray(refit.weights) @ colours.T
    assert np.abs(shipped_rgb - refit_rgb).mean() < 0.35, (shipped_rgb, refit_rgb)
