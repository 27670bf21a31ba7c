"""`flux2 serve --replicas` refusals and `flux2 info`'s Ray line: no Ray instance needed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from serve_process import _flux2


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*_flux2(), *args], capture_output=True, text=True, timeout=timeout,
                          env={"NO_COLOR": "1", "COLUMNS": "200", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


def test_info_shows_the_ray_version_without_importing_ray():
    from importlib import metadata

    pytest.importorskip("ray")
    code = ("import sys, json, io, contextlib\n"
            "from flux2cli.cli import main\n"
            "sys.argv = ['flux2', 'info', '--json']\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n        main()\n    except SystemExit:\n        pass\n"
            "print(json.dumps({'ray': json.loads(out.getvalue())['versions']['ray'], "
            "'imported': 'ray' in sys.modules}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"ray": metadata.version("ray"), "imported": False}


@pytest.mark.parametrize("args, message", [
    (["--encoder-replicas", "2"], "--encoder-replicas only go with --replicas N"),
    (["--ray-address", "auto", "--cpus-per-replica", "2"], "--cpus-per-replica, --ray-address only go with"),
    (["--replicas", "2", "--lora", "tiny-colours"], "--lora/--lora-dir cannot go with --replicas"),
    (["--replicas", "2", "--remote-encoder", "http://127.0.0.1:1/predict"], "--remote-encoder cannot go with"),
    (["--replicas", "0"], "0 is not in the range"),
])
def test_contradictory_scale_options_are_refused_in_one_line(args, message):
    result = _run("serve", "--model", "tiny", "--port", "0", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_cluster_is_one_line_and_exit_1():
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _run("serve", "--model", "tiny", "--port", "0", "--replicas", "1", "--ray-address", f"127.0.0.1:{port}")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == (f"error: the Ray cluster at 127.0.0.1:{port} cannot be reached (Connection refused); "
                         "is `ray start --head` running there?")
    assert "Traceback" not in result.stderr


def test_build_app_refuses_unknown_arguments():
    pytest.importorskip("ray")
    from flux2cli.errors import InvalidRequest
    from flux2cli.scale import app, build_app

    assert app is build_app
    with pytest.raises(InvalidRequest, match="needs args.model"):
        build_app({})
    with pytest.raises(InvalidRequest, match="unknown options gpu"):
        build_app({"model": "tiny", "options": {"gpu": 1}})
    bound = build_app({"model": "tiny", "replicas": "3", "cpus_per_replica": "0.5"})  # serve run passes strings
    assert bound._bound_deployment.num_replicas == 3
    assert bound._bound_deployment.ray_actor_options["num_cpus"] == 0.5


@pytest.mark.parametrize("import_path", ["flux2cli.scale:app", "flux2cli.scale:build_app"])
def test_serve_config_import_paths_build_the_application(import_path):
    """What `serve run`/`serve deploy` do with a config's import_path and args (docs/scale-out.md)."""
    pytest.importorskip("ray")
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    built = call_user_app_builder_with_args_if_necessary(import_attr(import_path), {"model": "tiny", "replicas": 2})
    assert isinstance(built, Application)
    assert built._bound_deployment.name == "Generator" and built._bound_deployment.num_replicas == 2


def test_generate_counts_only_ready_replicas(tmp_path):
    """The worker's slots without Ray: a fake engine with 2 slots of which 1 is ready (the other
    restarting) answers 503 to /generate while its one ready replica is busy, 200 once both are."""
    from flux2cli.server.config import ServerConfig
    from server_fixtures import FakeEngine, LiveServer, assert_error

    engine = FakeEngine(hold=True)
    engine.slots = 2
    ready = {"ready": 1, "total": 2, "encoder": {"ready": 1, "total": 1}}
    engine.replica_counts = lambda: dict(ready)
    with LiveServer(engine, ServerConfig(output_dir=tmp_path)) as live:
        held = live.call("POST", "/jobs", {"prompt": "held", "steps": 3}).json()["id"]
        live.wait_until(lambda: live.worker.running is not None and live.worker.running.step >= 1, what="a job to run")
        assert "all 2 replicas are busy" in assert_error(live.call("POST", "/generate", {"prompt": "x", "steps": 1}), 503)
        status = live.call("GET", "/status").json()
        assert status["replicas"] == ready and [entry["prompt"] for entry in status["running"]] == ["held"]
        ready["ready"] = 2
        engine.release.set()
        assert live.call("POST", "/generate", {"prompt": "x", "steps": 1}).status == 200
        assert list(live.events(held))[-1]["event"] == "done"
