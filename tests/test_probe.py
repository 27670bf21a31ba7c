"""flux2cli.probe: the one device rule, and the quick answers that never import torch."""

import subprocess
import sys

import pytest
import torch

from flux2cli import probe
from flux2cli.errors import InvalidRequest


def test_importing_and_the_quick_probe_leave_torch_alone():
    code = ("import sys, flux2cli.probe as p; p.probe_device(); p.library_versions(); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_auto_prefers_cuda_then_mps_unless_the_caller_cannot_measure_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert probe.pick_device() == "mps" and probe.pick_device("auto") == "mps"
    assert probe.pick_device(mps=False) == "cpu"  # flux2 bench
    assert probe.pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert probe.pick_device() == "cuda" and probe.pick_device(mps=False) == "cuda"


def test_a_cuda_device_torch_cannot_see_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidRequest, match=r"^device cuda:1: torch sees no CUDA GPU here; use cpu$"):
        probe.pick_device("cuda:1")


def test_the_cpu_is_described_with_its_threads():
    described = probe.describe_device("cpu")
    assert described["type"] == "cpu" and described["name"] and described["threads"] == torch.get_num_threads()
    assert probe.free_accelerator_bytes("cpu") is None and probe.available_ram() > 0


def test_versions_name_every_library_and_find_the_installed_ones():
    versions = probe.library_versions()
    assert list(versions) == list(probe.LIBRARIES)
    assert versions["torch"] == torch.__version__ and versions["flux2cli"]
