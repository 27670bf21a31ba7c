import json
import os
import re
import time

import pytest
from PIL import Image

from flux2cli.pipeline.output import (
    TEMP_PREFIX,
    atomic_write,
    clean_stale_temp_files,
    new_filename,
    save_image,
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
        raise OSError("disk full")


def test_a_failed_save_leaves_no_partial_file(tmp_path):
    with pytest.raises(OSError, match="disk full"):
        save_image(Exploding(), _request(), seed=1, timings={"encoding": 0, "diffusion": 0},
                   output_dir=tmp_path, model_name="m")
    assert list(tmp_path.iterdir()) == []


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


def test_stale_temp_files_are_cleaned_but_fresh_ones_kept(tmp_path):
    stale = tmp_path / f"{TEMP_PREFIX}abc.tmp"
    fresh = tmp_path / f"{TEMP_PREFIX}def.tmp"
    keep = tmp_path / "flux2_x.png"
    for path in (stale, fresh, keep):
        path.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert clean_stale_temp_files(tmp_path) == 1
    assert not stale.exists() and fresh.exists() and keep.exists()
