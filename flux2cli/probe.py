"""What this machine is: library versions, the accelerator, free memory.

The one place that asks, for `flux2 info`, `flux2 bench`, the model loader and
``benchmarks/``. Importing it is cheap: versions come from ``importlib.metadata``, the
quick device answer from ``nvidia-smi``, and torch is imported only inside the functions
that must ask torch (`flux2 info` never calls them unless given ``--probe``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from flux2cli.errors import InvalidRequest

LIBRARIES = ("flux2cli", "torch", "diffusers", "transformers", "huggingface_hub", "accelerate",
             "bitsandbytes", "gguf", "aiohttp", "prompt_toolkit", "typer", "ray")
_GB = 1024**3


def library_versions() -> dict[str, str | None]:
    """Installed version of each library that matters here; None where it is missing."""
    from importlib import metadata  # 15 ms: not paid by `flux2 --help`

    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    """The CPU's model name (Linux names it in /proc/cpuinfo; elsewhere what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_device(with_torch: bool = False) -> dict[str, Any]:
    """The accelerator that a run would use: ``{"type", "name", "memory_gb", ...}``.

    Without torch (fast): nvidia-smi's first GPU, else Apple silicon's MPS, else the CPU.
    With torch (a slow import): what torch itself sees, described by ``describe_device``.
    """
    if with_torch:
        return describe_device(pick_device())
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5, check=True).stdout.splitlines()[0]
            name, memory_mib = (part.strip() for part in out.split(","))
            return {"type": "cuda", "name": name, "memory_gb": round(float(memory_mib) / 1024, 1)}
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            pass
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return {"type": "mps", "name": "Apple GPU", "memory_gb": None}
    return {"type": "cpu", "name": cpu_name(), "memory_gb": None}


def pick_device(requested: str | None = None, *, mps: bool = True) -> str:
    """The torch device to run on: ``requested`` when given, else the best one torch sees.

    One rule for every caller: CUDA first, then Apple's MPS, then the CPU. A caller that
    cannot measure on MPS passes ``mps=False`` (`flux2 bench`: its synchronisation and
    peak-memory readings exist only for CUDA and for the process, so on MPS it would time
    queued work, not finished work). A CUDA device that torch cannot see is refused here,
    in one line, instead of deep inside torch.
    """
    import torch

    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise InvalidRequest(f"device {requested}: torch sees no CUDA GPU here; use cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if mps and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def describe_device(device: str) -> dict[str, Any]:
    """What torch says about ``device`` (imports torch)."""
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return {"type": "cuda", "name": props.name, "memory_gb": round(props.total_memory / _GB, 1),
                "cuda": torch.version.cuda}
    if device.startswith("mps"):
        return {"type": "mps", "name": "Apple GPU", "memory_gb": None}
    return {"type": "cpu", "name": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "memory_gb": None}


def free_accelerator_bytes(device: str) -> int | None:
    """Free memory on ``device`` in bytes, or None where it cannot be asked (CPU, MPS)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if device.startswith("xpu") and hasattr(torch, "xpu") and torch.xpu.is_available():
        free, _total = torch.xpu.mem_get_info()
        return int(free)
    return None


def available_ram() -> float:
    """Bytes of RAM that can be allocated without swapping (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def total_ram_gb() -> float | None:
    """Installed RAM in GB (Linux; None elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None
