"""`flux2 generate` through a resident `flux2 serve` (flux2cli/client/delegate.py).

A real tiny server on 127.0.0.1 (the app, its worker and the engine, in this process) and
the installed console script in a subprocess, as a user runs them: the delegated run writes
the same pixels, metadata and sidecar as an in-process run with the same seed, imports no
torch, and a server that is absent, down or runs another model is handled as documented.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from console_script import FLUX2, PLAIN
from flux2cli.server.config import ServerConfig
from server_fixtures import LiveServer
from standins import ONE_THREAD_ENV, ThreadedServer

PROMPT = "a red circle on a blue background"
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the server's pixels match a 1-thread subprocess


def flux2(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLUX2, *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **PLAIN, **ONE_THREAD_ENV, **env})


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    return [(png, png.with_suffix(".prompt")) for png in sorted(folder.glob("*.png"))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def keyed(tiny_engine, tmp_path_factory):
    """A tiny server that wants an API key."""
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path_factory.mktemp("keyed"), api_key="k3y")) as live:
        yield live


def test_a_delegated_run_writes_what_a_local_run_writes(server, tmp_path):
    args = ("generate", PROMPT, "--model", "tiny", "--seed", "7", "--steps", "3")
    remote = flux2(*args, "--server", server.url, "-o", str(tmp_path / "remote"))
    local = flux2(*args, "--local", "-o", str(tmp_path / "local"))
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    [(png, sidecar)], [(local_png, local_sidecar)] = _pairs(tmp_path / "remote"), _pairs(tmp_path / "local")

    assert (server.config.output_dir / png.name).read_bytes() == png.read_bytes()  # the server's file, unchanged
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(local_png)))
    ours, theirs = (json.loads(Image.open(p).text["flux2"]) for p in (png, local_png))
    assert ours.pop("timings").keys() == theirs.pop("timings").keys() and ours == theirs
    without_timings = [[line for line in p.read_text().splitlines() if not line.startswith("# Timings")]
                       for p in (sidecar, local_sidecar)]
    assert without_timings[0] == without_timings[1] and len(without_timings[0]) == 5
    assert remote.stdout.split()[0] == str(png) and "seed 7" in remote.stdout
    assert not list((tmp_path / "remote").glob(".flux2-*"))  # no temporary file left


def test_json_output_has_the_local_shape(server, tmp_path):
    args = ("generate", PROMPT, "--model", "tiny", "--seed", "2", "--steps", "2", "--batch", "2", "--json")
    remote = json.loads(flux2(*args, "--server", server.url, "-o", str(tmp_path / "r")).stdout)
    local = json.loads(flux2(*args, "--local", "-o", str(tmp_path / "l")).stdout)
    assert remote.keys() == local.keys() and remote["success"] is True
    assert [image.keys() for image in remote["images"]] == [image.keys() for image in local["images"]]
    assert [image["seed"] for image in remote["images"]] == [2, 3]
    assert all(Path(image["path"]).is_file() and Path(image["path"]).parent == tmp_path / "r"
               for image in remote["images"])


def test_the_delegated_path_imports_neither_torch_nor_diffusers(server, tmp_path):
    run = subprocess.run([sys.executable, "-X", "importtime", FLUX2, "generate", PROMPT, "--model", "tiny",
                          "--steps", "2", "-o", str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **PLAIN, "FLUX2_SERVER": server.url})
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert {"httpx", "flux2cli.client.delegate"} <= imported  # it did go through the server
    assert not {"torch", "diffusers", "transformers", "aiohttp"} & imported
    assert len(_pairs(tmp_path)) == 1


def test_the_default_address_is_used_when_a_server_there_runs_the_model(server, tmp_path):
    port = server.url.rsplit(":", 1)[1]
    run = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "-o", str(tmp_path), "--json",
                FLUX2_SERVER="", FLUX2_PORT=port)
    assert run.returncode == 0, run.stderr
    [image] = json.loads(run.stdout)["images"]
    assert (server.config.output_dir / image["filename"]).is_file()  # the server made it
    assert run.stderr.strip() == ""  # no notice: nothing went wrong


def test_nothing_at_the_default_address_runs_in_process_silently(tmp_path):
    run = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "-o", str(tmp_path),
                FLUX2_SERVER="", FLUX2_PORT=str(_free_port()))
    assert run.returncode == 0 and run.stderr.strip() == "", run.stderr
    assert len(_pairs(tmp_path)) == 1


def test_a_configured_server_that_is_down_falls_back_with_one_notice(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    run = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "-o", str(tmp_path), FLUX2_SERVER=url)
    assert run.returncode == 0, run.stderr
    notices = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(notices) == 1 and url in notices[0] and "in-process" in notices[0]
    assert len(_pairs(tmp_path)) == 1


def _canned(routes: dict[tuple[str, str], tuple[int, dict]]) -> ThreadedServer:
    """A server answering fixed JSON: what a flux2 server we cannot use looks like from outside."""
    from aiohttp import web

    app = web.Application()
    for (method, path), (status, body) in routes.items():
        async def answer(request, status=status, body=body):
            return web.json_response(body, status=status)
        app.router.add_route(method, path, answer)
    return ThreadedServer(app)


def _other_model_server() -> ThreadedServer:
    return _canned({("GET", "/model-info"): (200, {"model": "FLUX.2-klein-4B"})})


def test_a_server_running_another_model_falls_back_or_is_refused_when_named(tmp_path):
    with _other_model_server() as other:
        url = other.url("")
        fallback = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "-o", str(tmp_path / "a"),
                         FLUX2_SERVER=url)
        named = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "-o", str(tmp_path / "b"),
                      "--server", url)
    assert fallback.returncode == 0, fallback.stderr
    assert "runs FLUX.2-klein-4B, not flux2-tiny: running in-process" in fallback.stderr
    assert len(_pairs(tmp_path / "a")) == 1
    assert named.returncode == 2 and named.stderr.strip().count("\n") == 0, named.stderr
    assert "runs FLUX.2-klein-4B, not flux2-tiny" in named.stderr and not list((tmp_path / "b").glob("*.png"))


def test_a_named_server_that_is_down_is_refused(tmp_path):
    run = flux2("generate", PROMPT, "--model", "tiny", "--server", f"http://127.0.0.1:{_free_port()}",
                "-o", str(tmp_path))
    assert run.returncode == 2 and "does not answer" in run.stderr and run.stderr.strip().count("\n") == 0


def test_the_api_key_comes_from_flux2_api_key(keyed, tmp_path):
    refused = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "--server", keyed.url,
                    "-o", str(tmp_path / "a"))
    assert refused.returncode == 2 and "FLUX2_API_KEY" in refused.stderr
    done = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "--server", keyed.url,
                 "-o", str(tmp_path / "b"), FLUX2_API_KEY="k3y")
    assert done.returncode == 0, done.stderr
    assert len(_pairs(tmp_path / "b")) == 1


def test_a_refusal_by_the_server_is_its_one_line_and_exit_2(tmp_path):
    refusing = _canned({("GET", "/model-info"): (200, {"model": "flux2-tiny"}),
                        ("POST", "/jobs"): (400, {"success": False,
                                                  "error": "the queue holds too many reference images"})})
    with refusing as fake:
        run = flux2("generate", PROMPT, "--model", "tiny", "--server", fake.url(""), "-o", str(tmp_path))
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == "error: the queue holds too many reference images"


def test_loading_flags_keep_the_run_in_process_or_contradict_a_named_server(server, tmp_path):
    run = flux2("generate", PROMPT, "--model", "tiny", "--steps", "2", "--vae-tiling", "off",
                "--server", server.url, "-o", str(tmp_path))
    assert run.returncode == 2 and "--vae-tiling" in run.stderr
    both = flux2("generate", PROMPT, "--model", "tiny", "--local", "--server", server.url, "-o", str(tmp_path))
    assert both.returncode == 2 and "exclude" in both.stderr
