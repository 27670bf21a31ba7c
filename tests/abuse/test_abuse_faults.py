"""Faults while generating: a cancelled job, a failing model, a full disk. The answer is one
line without internals, the output folder gets whole results or nothing (the guard checks
for temp files and strays after every test), and the next request is served."""

from __future__ import annotations

import errno
import os

import pytest

from guarded_server import refused
from server_fixtures import TINY_PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _submit(server, **body) -> str:
    reply = server.call("POST", "/jobs", {"prompt": TINY_PROMPT, **body})
    assert reply.status == 202, reply.body
    return reply.json()["id"]


def test_a_job_cancelled_mid_run_leaves_no_file(server):
    before = set(os.listdir(server.config.output_dir))
    job = _submit(server, steps=50, seed=1)
    events = server.events(job)
    for event in events:
        if event["event"] == "step":
            break
    assert server.call("DELETE", f"/jobs/{job}").status in (200, 202)
    assert list(events)[-1]["data"]["state"] == "cancelled"
    assert set(os.listdir(server.config.output_dir)) == before


@pytest.fixture
def failing_transformer(tiny_engine):
    """The transformer raises from its second call on: the first run fails mid-diffusion."""
    transformer = tiny_engine.pipe.transformer
    real = transformer.forward
    calls = []

    def arm(error: Exception) -> None:
        def forward(*args, **kwargs):
            calls.append(1)
            if len(calls) >= 2:
                raise error
            return real(*args, **kwargs)
        transformer.forward = forward

    yield arm
    transformer.__dict__.pop("forward", None)  # back to the class's forward


@pytest.mark.parametrize(("error", "status", "words"), [
    (RuntimeError("expected scalar type Half at /home/alice/secret/model.py:12"), 500, "generation failed"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB; /opt/conda/lib/libtorch_cuda.so"), 507,
     "ran out of memory"),
])
def test_a_model_that_fails_mid_run_answers_one_line_and_writes_nothing(server, failing_transformer,
                                                                        error, status, words):
    failing_transformer(error)
    before = set(os.listdir(server.config.output_dir))
    reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 3, "seed": 2})
    message = refused(server, reply, status)
    assert words in message and "/home/" not in reply.text and "/opt/" not in reply.text
    job = _submit(server, steps=3, seed=2)
    last = list(server.events(job))[-1]["data"]
    assert last["state"] == "error" and last["status"] == status and words in last["error"]
    snapshot = server.call("GET", f"/jobs/{job}")
    assert "/home/" not in snapshot.text and "/opt/" not in snapshot.text
    assert set(os.listdir(server.config.output_dir)) == before


@pytest.mark.parametrize("failing_write", [1, 2], ids=["image", "sidecar"])
def test_a_full_disk_leaves_neither_a_temp_file_nor_half_a_result(server, monkeypatch, failing_write):
    """The image (write 1) or its sidecar (write 2) hits ENOSPC after its bytes were written."""
    real_fsync = os.fsync
    writes = []

    def fsync(fd):
        writes.append(fd)
        if len(writes) == failing_write:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    before = set(os.listdir(server.config.output_dir))
    monkeypatch.setattr(os, "fsync", fsync)
    reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1, "seed": 4})
    monkeypatch.undo()
    assert len(writes) >= failing_write  # the failure really happened while saving
    message = refused(server, reply, 507)
    assert "disk of the output folder is full" in message and str(server.config.output_dir) not in message
    assert set(os.listdir(server.config.output_dir)) == before
    assert server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1}).status == 200


def test_the_cli_refuses_a_prompt_that_is_not_unicode_in_one_line(tmp_path):
    """Undecodable argv bytes arrive as lone surrogates; the tokenizer used to crash on them."""
    from console_script import run

    result = run("generate", "a red \udcff circle", "--model", "tiny", "--steps", "1",
                 "--output-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "unpaired surrogates" in result.stderr and result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def _failing_fsync(monkeypatch, at: int, number: int) -> list:
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == at:
            raise OSError(number, os.strerror(number))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("path", ["/generate", "/v1/images/generations"])
def test_a_disk_that_fills_mid_batch_answers_507_and_keeps_none_of_the_batch(server, monkeypatch, path):
    """Image 1 of 2 is saved (PNG and sidecar), image 2's PNG hits ENOSPC: image 1 goes too."""
    before = set(os.listdir(server.config.output_dir))
    calls = _failing_fsync(monkeypatch, 3, errno.ENOSPC)
    body = {"prompt": TINY_PROMPT, "steps": 1, "seed": 5, ("n" if path.startswith("/v1") else "batch"): 2}
    reply = server.call("POST", path, body)
    monkeypatch.undo()
    assert len(calls) == 3
    assert reply.status == 507, reply.body[:300]
    text = reply.text
    assert "disk of the output folder is full" in text and str(server.config.output_dir) not in text
    server.assert_survived()
    assert set(os.listdir(server.config.output_dir)) == before


def test_a_folder_that_refuses_writes_is_one_line_saying_so(server, monkeypatch):
    before = set(os.listdir(server.config.output_dir))
    _failing_fsync(monkeypatch, 1, errno.EACCES)
    reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1})
    monkeypatch.undo()
    message = refused(server, reply, 500)
    assert "permission denied" in message and "unexpectedly" not in message
    assert set(os.listdir(server.config.output_dir)) == before


def test_a_restart_removes_what_a_killed_save_left(tiny_engine, tmp_path):
    """A kill -9 between the sidecar's rename and the PNG's leaves both files; the next start
    removes them, and keeps whole pairs and a live writer's temp file."""
    import subprocess
    import sys

    from flux2cli.pipeline.output import TEMP_PREFIX, TEMP_SUFFIX
    from flux2cli.server.config import ServerConfig
    from guarded_server import GuardedServer

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    folder = tmp_path / "out"
    folder.mkdir()
    orphan = "flux2_20250101_000000_0000dead.png"
    (folder / f"{TEMP_PREFIX}{pid}-0badf00d-{orphan}{TEMP_SUFFIX}").write_bytes(b"\x89PNG half")
    (folder / orphan.replace(".png", ".prompt")).write_text("# Raw input: x\n")
    (folder / f"{TEMP_PREFIX}{pid}-0badf00d-{orphan.replace('.png', '.prompt')}{TEMP_SUFFIX}").write_text("#")
    whole = "flux2_20250101_000000_00000001.png"
    (folder / whole).write_bytes(b"png")
    (folder / whole.replace(".png", ".prompt")).write_text("# Raw input: y\n")
    live = f"{TEMP_PREFIX}{os.getpid()}-00000002-flux2_20250101_000000_00000002.png{TEMP_SUFFIX}"
    (folder / live).write_bytes(b"being written")
    with GuardedServer(tiny_engine, ServerConfig(output_dir=folder)) as restarted:
        restarted.planted |= {whole, whole.replace(".png", ".prompt")}
        assert sorted(os.listdir(folder)) == sorted([whole, whole.replace(".png", ".prompt"), live])
        (folder / live).unlink()  # (the guard counts any temp file as debris)
