"""Generation on Ray Serve: throughput with 1 and 2 replicas, and the latency Ray adds.

One local Ray instance (2 CPUs) with the `tiny` application deployed once: 2 generation
replicas at 1 CPU each and an encoder replica. Jobs go through ``ReplicatedEngine``, the
server's engine (streamed steps, pixels back, PNGs written by this process), from as many
threads as the server's worker would use:

* throughput: 16 jobs one at a time (one replica working: what 1 replica gives) against
  16 jobs two at a time (both working), in interleaved batches of 8; the ratio of jobs
  per second (issue 15 expects >= 1.6x on 2 cores);
* latency: one generation through Ray against the same request on the in-process engine
  at 1 torch thread (what a 1-CPU replica gets), interleaved, medians; the ratio is what
  Ray's transport (step events, pixels, the encoder call on a cached prompt) adds.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import interleave, median, summary

PROMPT = "a red circle on a blue background"
STEPS = 12
JOBS = 16
TARGET_RATIO = 1.6  # issue 15, on 2 cores


def run(engine: Any, quick: bool = False) -> dict[str, Any]:
    try:
        import ray
    except ImportError:
        return {"name": "scale", "skipped": "ray is not installed (pip install 'flux2cli[scale]')",
                "rows": [("Ray Serve replicas", "skipped: ray not installed", f">= {TARGET_RATIO}x", None)]}
    import torch

    from flux2cli.pipeline.request import GenerationRequest
    from flux2cli.scale.cluster import RayCluster

    jobs = 8 if quick else JOBS
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        with RayCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            replicated = cluster.start(engine.spec, {"model": "tiny", "replicas": 2, "encoder_replicas": 1,
                                                     "cpus_per_replica": 1}, preview_every=None)
            deploy_s = time.perf_counter() - start
            out = Path(tmp)

            def request(seed: int) -> Any:
                return GenerationRequest.create(PROMPT, model="tiny", steps=STEPS, seed=seed)

            def batch(concurrency: int):
                def go(round_: int) -> None:
                    seeds = [1000 * (round_ + 2) + i for i in range(jobs // 2)]
                    with ThreadPoolExecutor(concurrency) as pool:
                        list(pool.map(lambda seed: replicated.generate_and_save(request(seed), out), seeds))
                return go

            batches = interleave({"1 replica": batch(1), "2 replicas": batch(2)}, rounds=2, warmup=1)
            throughput = {name: jobs / sum(times) for name, times in batches.items()}

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as a replica at 1 CPU runs
            try:
                latency = interleave({
                    "ray": lambda round_: replicated.generate_and_save(request(7), out),
                    "in-process": lambda round_: engine.generate_and_save(request(7), out),
                }, rounds=3 if quick else 9, warmup=1)
            finally:
                torch.set_num_threads(threads)
    finally:
        ray.shutdown()
    ratio = throughput["2 replicas"] / throughput["1 replica"]
    ray_s, local_s = median(latency["ray"]), median(latency["in-process"])
    return {
        "name": "scale",
        "jobs": jobs, "steps": STEPS, "deploy_s": round(deploy_s, 1),
        "jobs_per_s": {name: round(value, 3) for name, value in throughput.items()},
        "throughput_ratio": round(ratio, 2),
        "latency_s": {name: summary(values) for name, values in latency.items()},
        "latency_ratio_ray_vs_in_process": round(ray_s / local_s, 2),
        "rows": [
            (f"Ray Serve: {jobs} tiny jobs, 2 vs 1 replica (1 CPU each)",
             f"{throughput['2 replicas']:.2f} vs {throughput['1 replica']:.2f} jobs/s ({ratio:.2f}x)",
             f">= {TARGET_RATIO}x", ratio >= TARGET_RATIO),
            ("Ray Serve: one generation vs in-process (1 thread)",
             f"{ray_s:.2f} s vs {local_s:.2f} s ({ray_s / local_s:.2f}x)", "-", None),
        ],
    }
