"""`flux2 info`'s fits column and its settings table's real defaults (issue 19.3)."""

from __future__ import annotations

import json

from console_script import run
from flux2cli.fits import GB, fits
from flux2cli.pipeline.registry import get_model

CPU = {"type": "cpu", "name": "test", "memory_gb": None}


def test_a_cpu_runs_what_its_ram_holds_with_bf16_widened_to_fp32():
    assert fits(get_model("tiny"), CPU, 2 * GB) == "yes"
    assert fits(get_model("klein-4b"), CPU, 24 * GB) == "no"  # 13 GB of bf16 is 26 GB of fp32 on a CPU
    assert fits(get_model("klein-4b"), CPU, 32 * GB) == "yes"
    assert fits(get_model("dev-bnb4"), CPU, 24 * GB) == "no"  # 18 GB + its 14 GB local encoder


def test_a_gpu_runs_or_offloads_as_offload_auto_would_decide():
    gpu = {"type": "cuda", "name": "test", "memory_gb": 80.0}
    assert fits(get_model("klein-9b"), gpu, 16 * GB) == "yes"
    assert fits(get_model("dev"), {**gpu, "memory_gb": 24.0}, 256 * GB) == "offload"  # 70 + 48 GB, RAM holds it
    assert fits(get_model("dev"), {**gpu, "memory_gb": 24.0}, 64 * GB) == "no"


def test_info_shows_fits_and_the_defaults_that_apply(tmp_path):
    env = {"FLUX2_HOME": str(tmp_path), "FLUX2_MODEL": "", "FLUX2_PORT": "", "FLUX2_HOST": ""}
    report = json.loads(run("info", "--json", env=env).stdout)
    rows = {row["name"]: row for row in report["models"]}
    assert rows["tiny"]["fits"] == "yes" and {row["fits"] for row in rows.values()} <= {"yes", "offload", "no"}
    settings = {row["env"]: row for row in report["settings"]}
    assert (settings["FLUX2_MODEL"]["value"], settings["FLUX2_HOST"]["value"], settings["FLUX2_PORT"]["value"]) \
        == ("dev-bnb4", "127.0.0.1", "2222")
    assert {settings[name]["source"] for name in ("FLUX2_MODEL", "FLUX2_HOST", "FLUX2_PORT")} == {"default"}
    table = run("info", env={**env, "COLUMNS": "80"}).stdout.splitlines()
    assert "fits" in next(line for line in table if line.startswith("name"))
    assert "2222" in next(line for line in table if "FLUX2_PORT" in line)
