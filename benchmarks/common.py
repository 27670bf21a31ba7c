"""Helpers shared by the benchmarks: robust statistics, interleaving, the machine."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleave(variants: dict[str, Callable[[int], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run the variants A B C, C B A, A B C, ... ``rounds`` times each; wall times per variant.

    Alternating the order cancels drift (a background job, thermal state, caches warmed by
    the previous call) between variants; the callers compare medians, which ignore outliers.
    ``fn(i)`` gets the round number, so a round can use a fresh prompt or seed.
    """
    names = list(variants)
    for i in range(warmup):
        for name in names:
            variants[name](-1 - i)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            elapsed, _ = timed(lambda: variants[name](i))
            times[name].append(elapsed)
    return times


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(median(values), 5), "min": round(min(values), 5),
            "max": round(max(values), 5), "n": len(values)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on (flux2cli.probe answers; torch is not imported)."""
    from flux2cli.probe import cpu_name, library_versions, probe_device, total_ram_gb

    device = probe_device(with_torch=False)  # nvidia-smi when there is one
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": total_ram_gb(),
        "gpu": device["name"] if device["type"] == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": library_versions(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def flux2_executable() -> str:
    path = BIN / "flux2"
    if not path.exists():
        raise SystemExit("flux2 is not installed in this environment: pip install -e .")
    return str(path)
