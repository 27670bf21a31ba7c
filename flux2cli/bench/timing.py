"""Timing a built model: warm-up, the timed steps, the VAE decode, peak memory, TFLOP/s.

GPU work is asynchronous, so every timed section ends with ``sync``; the CPU needs none.
Only CUDA and the CPU are measured (see ``probe.pick_device``): peak memory comes from
CUDA's allocator there and from the process's peak RSS here.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from flux2cli.bench.arch import PIXELS_PER_TOKEN, TEXT_TOKENS
from flux2cli.bench.memory import GB
from flux2cli.bench.report import Timing

Progress = Callable[[str], None]

# Dense (no sparsity) peak TFLOP/s from the vendors' datasheets, by dtype. fp32 is the
# plain FP32 rate: PyTorch does not use TF32 for matmuls unless told to.
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], dict[str, float]], ...] = (
    (("H200",), {"bf16": 989.4, "fp32": 66.9}),
    (("H100", "HBM3"), {"bf16": 989.4, "fp32": 66.9}),  # SXM
    (("H100", "SXM"), {"bf16": 989.4, "fp32": 66.9}),
    (("H100", "NVL"), {"bf16": 835.0, "fp32": 60.0}),
    (("H100", "PCIe"), {"bf16": 756.0, "fp32": 51.2}),
    (("A100",), {"bf16": 312.0, "fp32": 19.5}),
    (("L40S",), {"bf16": 362.1, "fp32": 91.6}),
)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(device: str, work: Callable[[], Any]) -> float:
    """Seconds that ``work`` takes on ``device``, its queued GPU work included."""
    start = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - start


def transformer_inputs(config: dict[str, Any], size: int, batch: int, device: str, dtype, seed: int) -> dict[str, Any]:
    """What the pipeline hands the transformer at one step (ids as in Flux2Pipeline)."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    side = size // PIXELS_PER_TOKEN
    n_img = side * side

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    one = torch.arange(1)  # coordinates are (t, h, w, l); t and l are 0 for text-to-image
    img_ids = torch.cartesian_prod(one, torch.arange(side), torch.arange(side), one)
    txt_ids = torch.cartesian_prod(one, one, one, torch.arange(TEXT_TOKENS))
    return {
        "hidden_states": randn(batch, n_img, config["in_channels"]),
        "encoder_hidden_states": randn(batch, TEXT_TOKENS, config["joint_attention_dim"]),
        "timestep": torch.full((batch,), 0.5, device=device, dtype=dtype),
        "img_ids": img_ids.to(device),
        "txt_ids": txt_ids.to(device),
        "guidance": torch.full((batch,), 4.0, device=device, dtype=dtype) if config["guidance_embeds"] else None,
        "return_dict": False,
    }


def vae_latents(vae, size: int, batch: int, device: str, dtype, seed: int):
    """Random latents of a ``size`` x ``size`` image on the VAE's grid (8x down)."""
    import torch

    side = size // (PIXELS_PER_TOKEN // 2)
    return torch.randn(batch, vae.config.latent_channels, side, side,
                       generator=torch.Generator("cpu").manual_seed(seed)).to(device, dtype)


@dataclass(frozen=True)
class Passes:
    """Raw seconds of the timed passes; ``timing`` rounds them for the report."""

    warmup_s: float
    steps_s: tuple[float, ...]
    decode_s: float | None

    @property
    def step_s(self) -> float:
        return statistics.median(self.steps_s)

    def timing(self, build_s: float, batch: int) -> Timing:
        return Timing(
            build_s=round(build_s, 3),
            warmup_s=round(self.warmup_s, 3),
            step_s=round(self.step_s, 4),
            step_s_mean=round(statistics.fmean(self.steps_s), 4),
            steps_s=tuple(round(t, 4) for t in self.steps_s),
            vae_decode_s=None if self.decode_s is None else round(self.decode_s, 4),
            image_s=round((sum(self.steps_s) + (self.decode_s or 0.0)) / batch, 4),
        )


def time_passes(transformer, vae, inputs: dict[str, Any], latents, *, steps: int, warmup: int, device: str,
                say: Progress, compiling: bool = False) -> Passes:
    """Untimed warm-up passes, then ``steps`` timed transformer steps and one VAE decode."""
    import torch

    def one_pass() -> None:
        transformer(**inputs)
        if vae is not None:
            vae.decode(latents)

    with torch.inference_mode():
        start = time.perf_counter()
        for index in range(warmup):
            say(f"warm-up {index + 1}/{warmup}" + (" (compiling)" if compiling else ""))
            one_pass()
        sync(device)
        warmup_s = time.perf_counter() - start

        step_times = []
        for index in range(steps):
            say(f"step {index + 1}/{steps}")
            step_times.append(timed(device, lambda: transformer(**inputs)))
        decode = None
        if vae is not None:
            say("VAE decode")
            decode = timed(device, lambda: vae.decode(latents))
    return Passes(warmup_s, tuple(step_times), decode)


# -- memory ------------------------------------------------------------------------


def memory_baseline(device: str) -> float:
    """Bytes in use before building; on CUDA this also starts a fresh peak count."""
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
        return float(torch.cuda.memory_allocated())
    return _current_rss()


def peak_memory(device: str) -> tuple[float, str]:
    """Peak GB since ``memory_baseline``, and what was read."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / GB, "CUDA max_memory_allocated"
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GB if sys.platform == "darwin" else GB / 1024), "process peak RSS"


def _current_rss() -> float:
    """Resident bytes now (Linux; 0 elsewhere): the baseline the peak RSS is read against."""
    try:
        with open("/proc/self/statm") as handle:
            import os

            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0.0


# -- compute ceilings --------------------------------------------------------------


def spec_peak_tflops(device_name: str, dtype: str) -> float | None:
    for needles, peaks in PEAK_TFLOPS:
        if all(needle.lower() in device_name.lower() for needle in needles):
            return peaks.get(dtype)
    return None


def measured_gemm_tflops(device: str, dtype: Any) -> float:
    """What a large square matmul reaches here: the practical ceiling for this dtype."""
    import torch

    n = 8192 if device == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        a @ b
        sync(device)
        reps = 10 if device == "cuda" else 3
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
