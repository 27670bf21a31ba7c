"""What `flux2 bench` found: the typed report that the command prints and ``--json`` emits.

The field names and their order are the JSON keys (``as_json``), so a script reading
``flux2 bench --json`` sees the same document as before the report was typed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Blocks:
    double: int  # built
    single: int
    full_double: int  # the architecture's own depth
    full_single: int


@dataclass(frozen=True)
class Params:
    transformer: int
    vae: int


@dataclass(frozen=True)
class MemoryUse:
    estimate_gb: dict[str, float]  # MemoryEstimate.as_gb(): total, weights, activations, vae, headroom
    free_gb: float
    free_source: str  # "the GPU has free", "--memory allows free", ...
    peak_gb: float
    peak_kind: str  # "CUDA max_memory_allocated" or "process peak RSS"
    baseline_gb: float  # before building (on the CPU: Python, torch and diffusers themselves)
    peak_above_baseline_gb: float


@dataclass(frozen=True)
class Flops:
    per_step: int
    attention_share: float


@dataclass(frozen=True)
class Timing:
    build_s: float
    warmup_s: float
    step_s: float  # the median step
    step_s_mean: float
    steps_s: tuple[float, ...]
    vae_decode_s: float | None  # None with --no-vae
    image_s: float  # per image: the steps of one batch plus its decode, shared by the batch


@dataclass(frozen=True)
class Tflops:
    achieved: float
    spec_peak: float | None  # the datasheet's, for the GPUs we know
    measured_gemm: float


@dataclass(frozen=True)
class BenchReport:
    arch: str
    description: str
    nominal_params: str
    blocks: Blocks
    params: Params
    size: int
    image_tokens: int
    text_tokens: int
    batch: int
    steps: int
    dtype: str
    quant: str
    compile: bool
    device: dict[str, Any]  # probe.describe_device: its keys differ between CUDA and the CPU
    memory: MemoryUse
    flops: Flops
    timing: Timing
    tflops: Tflops
    # --cache MODE / --decoder small / --lora-rank R: the same work with and without, timed in this run (compare.py).
    cache: dict[str, Any] | None = None
    decoder: dict[str, Any] | None = None
    loras: dict[str, Any] | None = None  # --lora-rank R (lora.py)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
