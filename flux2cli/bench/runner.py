"""Build a FLUX.2 transformer (and VAE) with random weights and time it.

Order matters: the model is first built on the ``meta`` device (no memory) to count its
parameters, the memory estimate is checked against what the device has free, and only
then are the weights allocated, straight in their final dtype or quantized format, and
filled with cheap random values (a tiled random block, not default init: seconds instead
of minutes at 32 B parameters).
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from flux2cli.bench.arch import PIXELS_PER_TOKEN, TEXT_TOKENS, Architecture, get_arch, image_tokens
from flux2cli.bench.flops import transformer_flops
from flux2cli.bench.memory import GB, DoesNotFit, available_ram, estimate_memory
from flux2cli.errors import InvalidRequest, OutOfMemory

DTYPES = ("auto", "bf16", "fp32")
QUANTS = ("none", "nf4", "gguf-q8")
DEVICES = ("auto", "cpu", "cuda")
MAX_SIZE = 4096
MAX_BATCH = 16

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

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    arch: str = "klein-4b"
    size: int = 1024
    steps: int = 4
    dtype: str = "auto"
    quant: str = "none"
    batch: int = 1
    compile: bool = False
    layers: int | None = None
    warmup: int = 1
    vae: bool = True
    device: str = "auto"
    memory_gb: float | None = None  # plan for this much free memory instead of measuring it
    seed: int = 0

    def validate(self) -> Architecture:
        """Check every value before torch is imported; returns the architecture."""
        arch = get_arch(self.arch)
        if not PIXELS_PER_TOKEN <= self.size <= MAX_SIZE or self.size % PIXELS_PER_TOKEN:
            raise InvalidRequest(f"--size must be a multiple of {PIXELS_PER_TOKEN} between "
                                 f"{PIXELS_PER_TOKEN} and {MAX_SIZE} (got {self.size})")
        _check_choice("--dtype", self.dtype, DTYPES)
        _check_choice("--quant", self.quant, QUANTS)
        _check_choice("--device", self.device, DEVICES)
        for name, value, lo, hi in (("--steps", self.steps, 1, 1000), ("--batch", self.batch, 1, MAX_BATCH),
                                    ("--warmup", self.warmup, 0, 100)):
            if not lo <= value <= hi:
                raise InvalidRequest(f"{name} must be between {lo} and {hi} (got {value})")
        if self.layers is not None and self.layers < 1:
            raise InvalidRequest(f"--layers must be at least 1 (got {self.layers})")
        if self.memory_gb is not None and not self.memory_gb > 0:
            raise InvalidRequest(f"--memory must be a positive number of GB (got {self.memory_gb})")
        return arch


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidRequest(f"{flag} must be one of {', '.join(choices)} (got {value!r})")


def run_bench(options: BenchOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Refuse (``DoesNotFit``) or build, measure and return a JSON-ready report."""
    arch = options.validate()
    say = progress or (lambda message: None)
    import torch

    device = _pick_device(options.device)
    dtype_name = options.dtype if options.dtype != "auto" else ("bf16" if device == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    _check_quant(options.quant, device)
    if device == "cpu":
        torch.set_flush_denormal(True)  # random weights must not hit the slow denormal path

    config = arch.transformer_config(options.layers)
    n_img = image_tokens(options.size, options.size)
    flops = transformer_flops(config, n_img, TEXT_TOKENS, options.batch)

    say("counting parameters on the meta device")
    transformer, vae = build_on_meta(arch, config, options.vae)
    if options.quant != "none":
        _swap_quantized_linears(transformer, options.quant, dtype)
    params = sum(p.numel() for p in transformer.parameters())
    quantized, largest = _quantized_linear_stats(transformer, options.quant)
    vae_params = sum(p.numel() for p in vae.parameters()) if vae is not None else 0
    estimate = estimate_memory(
        params=params, quantized_params=quantized, largest_linear=largest,
        inner_dim=arch.inner_dim, joint_attention_dim=arch.joint_attention_dim, in_channels=arch.in_channels,
        image_tokens=n_img, text_tokens=TEXT_TOKENS, batch=options.batch, dtype=dtype_name, quant=options.quant,
        vae_params=vae_params, vae_pixels=options.size * options.size if vae is not None else 0,
        vae_channels=vae.config.block_out_channels[0] if vae is not None else 0, device_type=device,
    )
    free, free_source = _free_memory(device, options.memory_gb)
    label = _run_label(arch, config, options, dtype_name)
    if estimate.total > free:
        hints = (["--quant gguf-q8"] if options.quant == "none" else []) \
            + (["--dtype bf16"] if dtype_name == "fp32" else []) \
            + ["a smaller --size" + (" or --batch" if options.batch > 1 else ""), "--layers N"]
        raise DoesNotFit(f"{label} needs about {estimate.total / GB:.1f} GB (weights {estimate.weights / GB:.1f} GB) "
                         f"but {free_source.format(f'{free / GB:.1f} GB')}; try {', '.join(hints)}")

    report: dict[str, Any] = {
        "arch": arch.name,
        "description": arch.description,
        "nominal_params": arch.nominal,
        "blocks": {"double": config["num_layers"], "single": config["num_single_layers"],
                   "full_double": arch.num_layers, "full_single": arch.num_single_layers},
        "params": {"transformer": params, "vae": vae_params},
        "size": options.size,
        "image_tokens": n_img,
        "text_tokens": TEXT_TOKENS,
        "batch": options.batch,
        "steps": options.steps,
        "dtype": dtype_name,
        "quant": options.quant,
        "compile": options.compile,
        "device": _describe_device(device),
        "memory": {"estimate_gb": estimate.as_gb(), "free_gb": round(free / GB, 2),
                   "free_source": free_source.format("free")},
        "flops": {"per_step": flops.total, "attention_share": round(flops.attention / flops.total, 3)},
    }

    try:
        _measure(report, transformer, vae, arch, config, options, device, dtype, say)
    except torch.OutOfMemoryError:
        raise OutOfMemory(f"{label} ran out of device memory although the estimate said "
                          f"{estimate.total / GB:.1f} GB would do; try a smaller --size or --batch") from None
    return report


def _run_label(arch: Architecture, config: dict[str, Any], options: BenchOptions, dtype: str) -> str:
    depth = ""
    if options.layers is not None:
        depth = f" ({config['num_layers']}+{config['num_single_layers']} blocks)"
    quant = "" if options.quant == "none" else f" {options.quant}"
    return f"{arch.name}{depth} at {options.size}px, batch {options.batch}, {dtype}{quant}"


# -- devices -----------------------------------------------------------------------


def _pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise InvalidRequest("--device cuda: torch sees no CUDA GPU here; use --device cpu")
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_quant(quant: str, device: str) -> None:
    if quant == "nf4":
        if device != "cuda":
            raise InvalidRequest("--quant nf4 needs bitsandbytes with a CUDA GPU and this run is on the CPU; "
                                 "use --quant gguf-q8 or none")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InvalidRequest("--quant nf4 needs bitsandbytes: pip install 'flux2cli[bnb]'") from None
    if quant == "gguf-q8":
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise InvalidRequest("--quant gguf-q8 needs the gguf package: pip install 'flux2cli[gguf]'") from None


def _free_memory(device: str, override_gb: float | None) -> tuple[float, str]:
    """Bytes free, and a phrase to say so ("{}" is where the amount goes)."""
    if override_gb is not None:
        return override_gb * GB, "--memory allows {}"
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[0]), "the GPU has {} free"
    return available_ram(), "only {} of RAM is available"


def _describe_device(device: str) -> dict[str, Any]:
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return {"type": "cuda", "name": props.name, "memory_gb": round(props.total_memory / GB, 1),
                "cuda": torch.version.cuda}
    import os

    return {"type": "cpu", "name": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "memory_gb": None}


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
        _sync(device)
        reps = 10 if device == "cuda" else 3
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# -- building ----------------------------------------------------------------------


def build_on_meta(arch: Architecture, config: dict[str, Any], with_vae: bool):
    import torch

    from flux2cli.pipeline.loading import quiet_library_output

    quiet_library_output()
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    with torch.device("meta"):
        transformer = Flux2Transformer2DModel(**config)
        vae = AutoencoderKLFlux2(**arch.vae_config()) if with_vae else None
    transformer.eval().requires_grad_(False)
    if vae is not None:
        vae.eval().requires_grad_(False)
    return transformer, vae


def _block_linears(model):
    """(parent, attribute, Linear) for every linear inside the transformer blocks."""
    import torch

    for blocks in (model.transformer_blocks, model.single_transformer_blocks):
        for parent in blocks.modules():
            for name, child in parent.named_children():
                if type(child) is torch.nn.Linear:
                    yield parent, name, child


def _swap_quantized_linears(model, quant: str, dtype) -> None:
    """Replace the blocks' linears by quantized ones, still on meta (what real checkpoints quantize)."""
    import torch

    for parent, name, linear in list(_block_linears(model)):
        if quant == "gguf-q8":
            from diffusers.quantizers.gguf.utils import GGUFLinear

            if linear.in_features % 32:
                continue  # Q8_0 works in blocks of 32 weights per row
            with torch.device("meta"):
                new = GGUFLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                 compute_dtype=dtype)
        else:
            import bitsandbytes as bnb

            if linear.in_features % 64:
                continue
            with torch.device("meta"):
                new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, linear.bias is not None,
                                        compute_dtype=dtype, quant_type="nf4")
        new.requires_grad_(False)
        new._bench_quant = quant
        setattr(parent, name, new)


def _quantized_linear_stats(model, quant: str) -> tuple[int, int]:
    """(weights stored quantized, elements of the largest quantized weight)."""
    if quant == "none":
        return 0, 0
    sizes = [m.in_features * m.out_features for m in model.modules() if getattr(m, "_bench_quant", None)]
    return sum(sizes), max(sizes, default=0)


class _RandomFill:
    """Fills tensors from one random block, tiled: bandwidth-bound instead of RNG-bound."""

    BLOCK = (1 << 20) + 7  # not a power of two, so rows do not line up with the block

    def __init__(self, device: str, seed: int):
        import torch

        generator = torch.Generator("cpu").manual_seed(seed)
        self.device = device
        self.base = torch.randn(self.BLOCK, generator=generator).to(device)
        self._blocks: dict[Any, Any] = {}

    def normal_(self, tensor, std: float) -> None:
        block = self._blocks.get(tensor.dtype)
        if block is None:
            block = self._blocks[tensor.dtype] = self.base.to(tensor.dtype)
        flat = tensor.view(-1)
        whole, rest = divmod(flat.numel(), self.BLOCK)
        if whole:
            flat[: whole * self.BLOCK].view(whole, self.BLOCK).copy_(block.expand(whole, self.BLOCK))
        if rest:
            flat[whole * self.BLOCK:].copy_(block[:rest])
        tensor.mul_(std)

    def q8_0_(self, out_features: int, in_features: int, std: float):
        """Q8_0 bytes of a random (out, in) weight: one quantized row pattern, tiled."""
        import gguf
        import numpy as np
        import torch

        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
        values = (self.base[: 64 * block].cpu().numpy().astype(np.float32) * std).reshape(64, block)
        pattern = torch.from_numpy(gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0).reshape(-1))
        row_bytes = in_features // block * type_size
        data = torch.empty(out_features * row_bytes, dtype=torch.uint8, device=self.device)
        pattern = pattern.to(self.device)
        whole, rest = divmod(data.numel(), pattern.numel())
        if whole:
            data[: whole * pattern.numel()].view(whole, -1).copy_(pattern.expand(whole, -1))
        if rest:
            data[whole * pattern.numel():].copy_(pattern[:rest])
        return data.view(out_features, row_bytes)


def materialize(module, device: str, dtype, seed: int = 0) -> None:
    """Allocate every meta parameter and buffer of ``module`` on ``device`` and fill it.

    Linear-like weights get N(0, 1/fan_in) (activations stay O(1) through depth), norm
    scales 1, biases and buffers 0 (BatchNorm's running variance 1). Quantized linears are
    created directly in their storage format, so the peak is the final size.
    """
    import torch

    fill = _RandomFill(device, seed)
    with torch.no_grad():
        for name, sub in module.named_modules():
            quant = getattr(sub, "_bench_quant", None)
            if quant is not None:
                _materialize_quantized(sub, quant, device, dtype, fill)
            for key, param in list(sub._parameters.items()):
                if param is None or not param.is_meta:
                    continue
                data = torch.empty(param.shape, dtype=dtype, device=device)
                if key == "weight" and param.ndim >= 2:
                    fill.normal_(data, 1.0 / math.sqrt(param[0].numel()))
                elif key == "weight":
                    data.fill_(1.0)
                else:
                    data.zero_()
                sub._parameters[key] = torch.nn.Parameter(data, requires_grad=False)
            for key, buffer in list(sub._buffers.items()):
                if buffer is None or not buffer.is_meta:
                    continue
                kind = buffer.dtype if not buffer.dtype.is_floating_point else dtype
                data = torch.zeros(buffer.shape, dtype=kind, device=device)
                if key == "running_var":
                    data.fill_(1.0)
                sub._buffers[key] = data


def _materialize_quantized(linear, quant: str, device: str, dtype, fill: _RandomFill) -> None:
    import torch

    std = 1.0 / math.sqrt(linear.in_features)
    if quant == "gguf-q8":
        import gguf
        from diffusers.quantizers.gguf.utils import GGUFParameter

        data = fill.q8_0_(linear.out_features, linear.in_features, std)
        linear.weight = GGUFParameter(data, quant_type=gguf.GGMLQuantizationType.Q8_0)
    else:
        import bitsandbytes as bnb

        weight = torch.empty(linear.out_features, linear.in_features, dtype=dtype)
        fill_cpu = _RandomFill("cpu", 0) if fill.device != "cpu" else fill
        fill_cpu.normal_(weight, std)
        # Params4bit quantizes when it is moved to the GPU.
        linear.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4").to(device)
    if linear.bias is not None and linear.bias.is_meta:
        linear.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=dtype, device=device),
                                         requires_grad=False)


# -- measuring ---------------------------------------------------------------------


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


def _peak_memory(device: str) -> tuple[float, str]:
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


def _measure(report, transformer, vae, arch, config, options: BenchOptions, device, dtype, say: Progress) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if device == "cuda" else _current_rss()
    start = time.perf_counter()
    say("allocating random weights")
    materialize(transformer, device, dtype, options.seed)
    if vae is not None:
        materialize(vae, device, dtype, options.seed + 1)
    _sync(device)
    build = time.perf_counter() - start
    if options.compile:
        transformer.compile_repeated_blocks()

    inputs = transformer_inputs(config, options.size, options.batch, device, dtype, options.seed)
    latents = None
    if vae is not None:
        side = options.size // (PIXELS_PER_TOKEN // 2)  # the VAE's latent grid: 8x down
        latents = torch.randn(options.batch, vae.config.latent_channels, side, side,
                              generator=torch.Generator("cpu").manual_seed(options.seed)).to(device, dtype)

    with torch.inference_mode():
        start = time.perf_counter()
        for index in range(options.warmup):
            say(f"warm-up {index + 1}/{options.warmup}" + (" (compiling)" if options.compile else ""))
            transformer(**inputs)
            if vae is not None:
                vae.decode(latents)
        _sync(device)
        warmup = time.perf_counter() - start

        step_times = []
        for index in range(options.steps):
            say(f"step {index + 1}/{options.steps}")
            start = time.perf_counter()
            transformer(**inputs)
            _sync(device)
            step_times.append(time.perf_counter() - start)
        decode = None
        if vae is not None:
            say("VAE decode")
            start = time.perf_counter()
            vae.decode(latents)
            _sync(device)
            decode = time.perf_counter() - start

    peak, peak_kind = _peak_memory(device)
    say("measuring the device's matmul ceiling")
    step = statistics.median(step_times)
    device_name = report["device"]["name"]
    spec = spec_peak_tflops(device_name, report["dtype"]) if device == "cuda" else None
    report["timing"] = {
        "build_s": round(build, 3),
        "warmup_s": round(warmup, 3),
        "step_s": round(step, 4),
        "step_s_mean": round(statistics.fmean(step_times), 4),
        "steps_s": [round(t, 4) for t in step_times],
        "vae_decode_s": None if decode is None else round(decode, 4),
        # Per image: the steps of one batch plus its decode, shared by the batch.
        "image_s": round((sum(step_times) + (decode or 0.0)) / options.batch, 4),
    }
    # On the CPU the process peak includes Python, torch and diffusers themselves.
    report["memory"].update(peak_gb=round(peak, 2), peak_kind=peak_kind,
                            baseline_gb=round(baseline / GB, 2),
                            peak_above_baseline_gb=round(peak - baseline / GB, 2))
    report["tflops"] = {
        "achieved": round(report["flops"]["per_step"] / step / 1e12, 3),
        "spec_peak": spec,
        "measured_gemm": round(measured_gemm_tflops(device, dtype), 3),
    }

