import errno
import json
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from PIL import Image

from flux2cli.errors import OutputFolderError, StorageError, StorageFull
from flux2cli.pipeline.output import (
    TEMP_PREFIX,
    atomic_write,
    new_filename,
    prepare_output_dir,
    recover_output_dir,
    save_image,
    save_images,
    sidecar_text,
)
from flux2cli.pipeline.request import GenerationRequest


def _request(**kwargs):
    return GenerationRequest.create("a beautiful sunset", model="dev", seed=12345,
                                    raw_input="a beautiful sunset /4k", size="4mp", **kwargs)


def test_filename_pattern():
    assert re.fullmatch(r"flux2_\d{8}_\d{6}_[0-9a-f]{8}\.png", new_filename())
    assert new_filename() != new_filename()


def test_sidecar_is_exactly_the_spec_format():
    text = sidecar_text(_request(), 12345, {"encoding": 0.45, "diffusion": 12.34, "save": 0.12})
    assert text == (
        "# Raw input: a beautiful sunset /4k\n"
        "# Prompt: a beautiful sunset\n"
        "# Dimensions: 5376x3072\n"
        "# Seed: 12345\n"
        "# Steps: 25\n"
        "# Timings: encoding=0.45s, diffusion=12.34s, save=0.12s\n"
    )


def test_multiline_prompts_keep_the_sidecar_one_field_per_line():
    request = GenerationRequest.create("line one\nline two", model="tiny", seed=1)
    lines = sidecar_text(request, 1, {"encoding": 0, "diffusion": 0, "save": 0}).splitlines()
    assert lines[0] == "# Raw input: line one line two" and len(lines) == 6


def test_save_image_writes_png_metadata_and_sidecar(tmp_path):
    request = _request()
    image = Image.new("RGB", (32, 16), (10, 20, 30))
    saved = save_image(image, request, seed=12346, timings={"encoding": 0.5, "diffusion": 2.0},
                       output_dir=tmp_path / "new", model_name="FLUX.2-dev (full)")
    assert saved.path.parent == tmp_path / "new" and saved.sidecar == saved.path.with_suffix(".prompt")
    assert saved.timings["total"] == pytest.approx(2.5 + saved.timings["save"])
    with Image.open(saved.path) as png:
        assert png.size == (32, 16)
        meta = json.loads(png.text["flux2"])
        parameters = png.text["parameters"]
    assert meta["seed"] == 12346 and meta["raw_input"] == "a beautiful sunset /4k"
    assert meta["model_name"] == "FLUX.2-dev (full)" and meta["timings"]["diffusion"] == 2.0
    assert parameters.startswith("a beautiful sunset\nSteps: 25, ")
    assert "Seed: 12346" in parameters and "Size: 5376x3072" in parameters
    assert "# Seed: 12346\n" in saved.sidecar.read_text()
    assert sorted(p.name for p in saved.path.parent.iterdir()) == sorted([saved.path.name, saved.sidecar.name])


class Exploding:
    """An image whose encoder dies half-way through writing."""

    def save(self, handle, **kwargs):
        handle.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_save_leaves_no_partial_file_and_names_the_cause(tmp_path):
    with pytest.raises(StorageFull, match="disk of the output folder is full") as caught:
        save_image(Exploding(), _request(), seed=1, timings={"encoding": 0, "diffusion": 0},
                   output_dir=tmp_path, model_name="m")
    assert caught.value.http_status == 507 and str(tmp_path) not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("number", "kind", "status", "words"), [
    (errno.ENOSPC, StorageFull, 507, "full"),
    (errno.EDQUOT, StorageFull, 507, "full"),
    (errno.EACCES, StorageError, 500, "permission denied"),
    (errno.EROFS, StorageError, 500, "read-only"),
    (errno.EIO, StorageError, 500, "Input/output error"),
])
def test_each_storage_fault_is_one_line_naming_it(tmp_path, monkeypatch, number, kind, status, words):
    def fail(fd):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(kind) as caught:
        save_image(Image.new("RGB", (16, 16)), _request(), seed=1, timings={"encoding": 0, "diffusion": 0},
                   output_dir=tmp_path, model_name="m")
    message = str(caught.value)
    assert caught.value.http_status == status and words in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_a_batch_is_saved_whole_or_not_at_all(tmp_path, monkeypatch):
    """The third image of four hits a full disk: the two already saved are taken back."""
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 5:  # two files per image: the third image's PNG
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    results = [SimpleNamespace(image=Image.new("RGB", (16, 16)), seed=seed, timings={"encoding": 0, "diffusion": 0})
               for seed in range(4)]
    with pytest.raises(StorageFull):
        save_images(results, _request(), output_dir=tmp_path, model_name="m")
    assert len(calls) == 5 and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    saved = save_images(results, _request(), output_dir=tmp_path, model_name="m")
    assert len(list(tmp_path.iterdir())) == 8 and [s.seed for s in saved] == [0, 1, 2, 3]


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        saved = save_image(Image.new("RGB", (16, 16)), _request(), seed=1, timings={"encoding": 0, "diffusion": 0},
                           output_dir=tmp_path, model_name="m")
    finally:
        os.umask(old)
    assert saved.path.stat().st_mode & 0o777 == 0o640
    assert saved.sidecar.stat().st_mode & 0o777 == 0o640


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "a.prompt"
    atomic_write(target, lambda f: f.write(b"old"))

    def fail(handle):
        handle.write(b"ne")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.prompt"]


_KILLED_BETWEEN_RENAMES = """
import os, sys
from PIL import Image
from flux2cli.pipeline.output import save_image
from flux2cli.pipeline.request import GenerationRequest

real_replace = os.replace
def replace(src, dst):
    if str(dst).endswith(".png"):
        # What the folder holds at the moment of a kill -9 between the two renames.
        print(sorted(os.listdir(os.path.dirname(dst))), flush=True)
        os._exit(9)
    real_replace(src, dst)
os.replace = replace
save_image(Image.new("RGB", (16, 16)), GenerationRequest.create("x", model="tiny", seed=1), seed=1,
           timings={"encoding": 0, "diffusion": 0}, output_dir=__import__("pathlib").Path(sys.argv[1]),
           model_name="m")
"""


def test_a_kill_between_the_renames_leaves_no_png_without_sidecar_and_a_restart_cleans_up(tmp_path):
    done = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    at_kill = eval(done.stdout)  # noqa: S307 - our own child's list of names
    assert not any(name.endswith(".png") for name in at_kill)  # the PNG is still a temp file
    assert any(name.endswith(".prompt") for name in at_kill)
    assert any(name.startswith(TEMP_PREFIX) for name in at_kill)
    keep = tmp_path / "flux2_20250101_000000_0000beef.png"
    keep.write_bytes(b"x")
    keep.with_suffix(".prompt").write_bytes(b"x")
    assert recover_output_dir(tmp_path) == 2  # the dead writer's temp PNG and its orphan sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([keep.name, keep.with_suffix(".prompt").name])


def test_recovery_keeps_a_live_writers_temp_files_until_they_are_stale(tmp_path):
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-deadbeef-flux2_x.png.tmp"
    legacy_stale = tmp_path / f"{TEMP_PREFIX}abc.tmp"
    legacy_fresh = tmp_path / f"{TEMP_PREFIX}def.tmp"
    keep = tmp_path / "flux2_x.png"
    for path in (live, legacy_stale, legacy_fresh, keep):
        path.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(legacy_stale, (old, old))
    assert recover_output_dir(tmp_path) == 1
    assert not legacy_stale.exists() and live.exists() and legacy_fresh.exists() and keep.exists()
    os.utime(live, (old, old))
    assert recover_output_dir(tmp_path) == 1 and not live.exists()


def test_prepare_output_dir_creates_the_folder_and_leaves_nothing_in_it(tmp_path):
    folder = prepare_output_dir(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []


@pytest.mark.parametrize("case", ["file", "inside a file", "dangling link", "link loop", "too long"])
def test_prepare_output_dir_refuses_an_unusable_folder_in_one_line(tmp_path, case):
    target = tmp_path / "out"
    words = {"file": "is a file", "inside a file": "part of the path is a file",
             "dangling link": "symbolic link to nothing", "link loop": "loop of symbolic links",
             "too long": "name is too long"}[case]
    if case == "file":
        target.write_text("x")
    elif case == "inside a file":
        (tmp_path / "f").write_text("x")
        target = tmp_path / "f" / "out"
    elif case == "dangling link":
        target.symlink_to(tmp_path / "missing")
    elif case == "link loop":
        target.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(target)
    else:
        target = tmp_path / ("x" * 300)
    with pytest.raises(OutputFolderError) as caught:
        prepare_output_dir(target)
    message = str(caught.value)
    assert words in message and "\n" not in message and caught.value.exit_code == 2


def test_prepare_output_dir_refuses_a_folder_it_cannot_write_into(tmp_path, monkeypatch):
    """Simulated: as root (CI containers) a read-only mode does not stop writes."""
    real_open = os.open

    def refuse(path, flags, *args):
        if os.fspath(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OutputFolderError, match="not writable"):
        prepare_output_dir(tmp_path)
