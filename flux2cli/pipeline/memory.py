"""Memory options: CPU offloading, VAE tiling, and torch.compile of the transformer.

* ``--offload none|model|sequential|auto``: ``auto`` compares the free accelerator memory
  with the model's rough need (``ModelSpec.memory_gb``) and says what it chose and why.
  Offloading needs an accelerator; on the CPU everything already lives in RAM.
* ``--vae-tiling auto|on|off``: ``auto`` tiles the VAE for images above 2 MP (scaled by the
  model's native size, so the tiny model tiles at its own 2mp/4mp sizes). The decision is
  made for every encode/decode from the tensor actually passed, i.e. per request size.
* ``--compile``: the transformer's repeated blocks are compiled (``compile_repeated_blocks``
  when the model declares them, else ``torch.compile`` of the whole model), once per loaded
  model. The first image is slow; every new size compiles again.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.probe import free_accelerator_bytes

OFFLOAD_MODES = ("auto", "none", "model", "sequential")
TILING_MODES = ("auto", "on", "off")
TILING_THRESHOLD_PIXELS = 2_000_000  # "above 2 MP", at the model's native scale
_GB = 1024**3
_HEADROOM = 1.15  # activations, the CUDA context, fragmentation


@dataclass(frozen=True)
class OffloadPlan:
    mode: str  # "none" | "model" | "sequential"
    reason: str  # one line for the user, e.g. "free GPU memory 22.5 GB < ~45 GB needed"


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    value = (value or "auto").strip().lower()
    if value not in allowed:
        raise InvalidRequest(f"{name} takes one of {', '.join(allowed)} (got {value!r})")
    return value


def plan_offload(requested: str, device: str, memory_gb: float, *,
                 free_bytes: int | None = None, quantization: str = "") -> OffloadPlan:
    """Pick the offload mode; ``free_bytes`` is asked of the device when not given."""
    requested = check_choice("--offload", requested, OFFLOAD_MODES)
    accelerator = not device.startswith(("cpu", "mps"))
    if requested != "auto":
        if requested != "none" and not accelerator:
            raise InvalidRequest(f"--offload {requested} moves weights between a GPU and the CPU; "
                                 f"this run uses {device}, where everything is in RAM already: use --offload none")
        if requested == "sequential" and quantization.startswith("bnb"):
            raise InvalidRequest("--offload sequential does not work with bitsandbytes models; "
                                 "use --offload model, or a GGUF model (--gguf q8)")
        return OffloadPlan(requested, "as requested")
    if not accelerator:
        return OffloadPlan("none", f"{device}: weights stay in RAM")
    if free_bytes is None:
        free_bytes = free_accelerator_bytes(device)
    if free_bytes is None:
        return OffloadPlan("none", f"free memory of {device} unknown")
    free_gb = free_bytes / _GB
    need = memory_gb * _HEADROOM
    if free_gb >= need:
        return OffloadPlan("none", f"free GPU memory {free_gb:.1f} GB ≥ ~{need:.0f} GB needed")
    # Model offload keeps one component (the transformer, the largest) on the GPU at a time.
    if free_gb >= need * 0.6 or quantization.startswith("bnb"):
        return OffloadPlan("model", f"free GPU memory {free_gb:.1f} GB < ~{need:.0f} GB needed")
    return OffloadPlan("sequential", f"free GPU memory {free_gb:.1f} GB is far below ~{need:.0f} GB needed; "
                                     "sequential offload is slow")


def apply_offload(pipe: Any, plan: OffloadPlan, device: str, *, quantized_parts: tuple[str, ...] = ()) -> None:
    """Place the pipeline: offload hooks, or everything (movable) on ``device``."""
    if plan.mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif quantized_parts:
        # bitsandbytes weights are placed at load time and refuse .to(); move the rest.
        import torch

        for name, component in pipe.components.items():
            if name not in quantized_parts and isinstance(component, torch.nn.Module):
                component.to(device)
    else:
        pipe.to(device)


# --------------------------------------------------------------------------- VAE tiling


class AutoTiling:
    """Turns a VAE's tiling on or off per call, from the size of what it is given.

    Installed by wrapping the VAE instance's ``encode``/``decode``; the library's own
    ``use_tiling`` flag is what is switched, so its tiling code is used unchanged.
    """

    def __init__(self, vae: Any, mode: str, threshold_pixels: int):
        self.mode = check_choice("--vae-tiling", mode, TILING_MODES)
        self.threshold_pixels = threshold_pixels
        self.scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.decisions: list[tuple[int, int, bool]] = []  # (width, height, tiled), newest last
        self._vae = weakref.ref(vae)

    def wants_tiling(self, width: int, height: int) -> bool:
        if self.mode != "auto":
            return self.mode == "on"
        return width * height > self.threshold_pixels

    def _decide(self, width: int, height: int) -> None:
        tiled = self.wants_tiling(width, height)
        vae = self._vae()
        if vae is not None:
            vae.use_tiling = tiled
        self.decisions.append((width, height, tiled))
        del self.decisions[:-16]

    def install(self) -> AutoTiling:
        vae = self._vae()
        encode, decode = vae.encode, vae.decode

        def tiled_encode(x, *args, **kwargs):
            self._decide(int(x.shape[-1]), int(x.shape[-2]))
            return encode(x, *args, **kwargs)

        def tiled_decode(z, *args, **kwargs):
            self._decide(int(z.shape[-1]) * self.scale, int(z.shape[-2]) * self.scale)
            return decode(z, *args, **kwargs)

        vae.encode, vae.decode = tiled_encode, tiled_decode
        vae._flux2_tiling = self
        return self


def tiling_threshold(size_scale: float) -> int:
    return max(1, int(TILING_THRESHOLD_PIXELS * size_scale * size_scale))


def install_auto_tiling(vae: Any, mode: str, size_scale: float = 1.0) -> AutoTiling:
    return AutoTiling(vae, mode, tiling_threshold(size_scale)).install()


# --------------------------------------------------------------------------- compile

_compiled: "weakref.WeakSet[Any]" = weakref.WeakSet()


def compile_transformer(transformer: Any) -> str:
    """Compile ``transformer`` once; returns how ("repeated blocks" or "whole model")."""
    if transformer in _compiled:
        return "already compiled"
    if getattr(transformer, "_repeated_blocks", None) and hasattr(transformer, "compile_repeated_blocks"):
        transformer.compile_repeated_blocks(fullgraph=False)
        how = "repeated blocks"
    else:
        transformer.compile()
        how = "whole model"
    _compiled.add(transformer)
    return how
