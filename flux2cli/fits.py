"""Whether a registry model can run on this machine: ``yes``, ``offload`` or ``no``.

`flux2 info` shows it for every model, so a newcomer on a CPU sees at once that `tiny`
runs and [dev] does not. Read from the registry's memory figures and what the machine has,
without torch: a GPU by its memory, as ``--offload auto`` would decide; the CPU (and Apple's
unified memory) by the RAM free now, where bf16 weights load as fp32 (twice the bytes) on a
CPU and bitsandbytes or GGUF weights stay packed. [dev]'s text encoder counts too: the public
remote encoder has been paused since December 2025, so the local one is what a run gets.
"""

from __future__ import annotations

from typing import Any

from flux2cli.pipeline.memory import plan_offload

GB = 1024**3
CPU_HEADROOM = 1.15  # activations and the libraries themselves, as memory.py's GPU headroom


def fits(spec: Any, device: dict[str, Any], ram_bytes: float) -> str:
    """``device``: probe.probe_device's answer; ``ram_bytes``: RAM free now (probe.available_ram)."""
    ram_gb = ram_bytes / GB
    need_gb = spec.memory_gb + spec.encoder_memory_gb
    if device.get("type") == "cuda" and device.get("memory_gb"):
        plan = plan_offload("auto", "cuda", need_gb, free_bytes=int(device["memory_gb"] * GB),
                            quantization=spec.quantization)
        if plan.mode == "none":
            return "yes"
        return "offload" if need_gb <= ram_gb else "no"  # offloaded weights wait in RAM
    widened = 2 if device.get("type") == "cpu" and spec.quantization == "bf16" else 1
    return "yes" if need_gb * widened * CPU_HEADROOM <= ram_gb else "no"
