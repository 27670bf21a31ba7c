"""Run every benchmark, print one table, write the numbers as JSON.

    python -m benchmarks.run [--quick] [--only startup,cold,engine,same,server,large,resident,previews,scale] [--out PATH]

Results are ratios measured in one run on one machine; compare ratios, not seconds,
between machines. Nothing here asserts a time: targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import (cold_start, common, embedding_cache, engine_overhead, large_sizes, previews, resident, scale,
                        server, startup)

SUITES = {
    "startup": startup.run,
    "cold": cold_start.run,
    "engine": engine_overhead.run,
    "same": embedding_cache.run,
    "server": server.run,
    "large": large_sizes.run,
    "resident": resident.run,
    "previews": previews.run,
    "scale": scale.run,
}
NEEDS_ENGINE = {"engine", "same", "server", "previews", "scale"}
DEFAULT_OUT = common.ROOT / "benchmarks" / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, noisier numbers)")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated subset of " + ", ".join(SUITES))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SUITES)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")

    report: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "commit": _git_commit(), "quick": args.quick, "machine": common.machine(),
                              "results": {}}
    engine = None
    for name in chosen:
        print(f"-- {name} …", file=sys.stderr, flush=True)
        kwargs: dict[str, Any] = {"quick": args.quick}
        if name in NEEDS_ENGINE:
            if engine is None:
                from flux2cli.pipeline.engine import Engine

                engine = Engine.load("tiny")
            kwargs["engine"] = engine
        start = time.perf_counter()
        result = SUITES[name](**kwargs)
        result["wall_s"] = round(time.perf_counter() - start, 1)
        report["results"][name] = result
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    _print_table(report)
    print(f"\nwritten: {args.out}")
    return 0


def _print_table(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"\nflux2cli benchmarks on {machine['cpu']} ({machine['usable_cores']} cores, {machine['memory_gb']} GB), "
          f"torch {machine['versions']['torch']}, diffusers {machine['versions']['diffusers']}"
          + (" [quick]" if report["quick"] else ""))
    rows = [row for result in report["results"].values() for row in result["rows"]]
    widths = [max(len(str(row[i])) for row in rows + [("benchmark", "measured", "target", "")]) for i in range(3)]
    header = ("benchmark", "measured", "target")
    print("  ".join(text.ljust(width) for text, width in zip(header, widths)) + "  ok")
    for name, measured, target, ok in rows:
        mark = "-" if ok is None else ("yes" if ok else "NO")
        print("  ".join(str(text).ljust(width) for text, width in zip((name, measured, target), widths)) + f"  {mark}")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=common.ROOT, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=common.ROOT, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
