"""`flux2 bench`'s run: check the options, pick the device, refuse what will not fit, then
build random weights (``weights``), time them (``timing``) and return a ``BenchReport``.

The memory check comes before any allocation: the model is built on ``meta`` first, and
only a run whose estimate fits what the device has free gets real weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from flux2cli.bench import compare, timing, weights
from flux2cli.bench.arch import PIXELS_PER_TOKEN, TEXT_TOKENS, Architecture, get_arch, image_tokens
from flux2cli.bench.flops import transformer_flops
from flux2cli.bench.lora import compare_loras
from flux2cli.bench.memory import GB, DoesNotFit, estimate_memory
from flux2cli.bench.report import BenchReport, Blocks, Flops, MemoryUse, Params, Tflops
from flux2cli.bench.timing import Progress
from flux2cli.errors import InvalidRequest, OutOfMemory
from flux2cli.pipeline.fields import CACHE_MODES
from flux2cli.pipeline.registry import DECODERS
from flux2cli.probe import available_ram, describe_device, free_accelerator_bytes, pick_device

DTYPES = ("auto", "bf16", "fp32")
QUANTS = ("none", "nf4", "gguf-q8")
DEVICES = ("auto", "cpu", "cuda")  # no MPS: timing.py measures CUDA and the CPU only
MAX_SIZE = 4096
MAX_BATCH = 16
MAX_LORA_RANK = 256  # far above shared FLUX.2 LoRAs (4 to 128)


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
    cache: str = "off"  # also time a denoising loop with this step cache against one without
    decoder: str = "full"  # small: also time the small decoder's decode against the full one
    lora_rank: int | None = None  # also time steps with random LoRAs of this rank (bench/lora.py)

    def validate(self) -> Architecture:
        """Check every value before torch is imported; returns the architecture."""
        arch = get_arch(self.arch)
        if not PIXELS_PER_TOKEN <= self.size <= MAX_SIZE or self.size % PIXELS_PER_TOKEN:
            raise InvalidRequest(f"--size must be a multiple of {PIXELS_PER_TOKEN} between "
                                 f"{PIXELS_PER_TOKEN} and {MAX_SIZE} (got {self.size})")
        _check_choice("--dtype", self.dtype, DTYPES)
        _check_choice("--quant", self.quant, QUANTS)
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--cache", self.cache, CACHE_MODES)
        _check_choice("--decoder", self.decoder, DECODERS)
        if self.cache == "fbc" and self.layers is not None and self.layers < 2:
            raise InvalidRequest("--cache fbc skips the single blocks after the first: it needs --layers 2 or more")
        if self.decoder == "small" and not self.vae:
            raise InvalidRequest("--decoder small times the VAE decode; drop --no-vae")
        for name, value, lo, hi in (("--steps", self.steps, 1, 1000), ("--batch", self.batch, 1, MAX_BATCH),
                                    ("--warmup", self.warmup, 0, 100)):
            if not lo <= value <= hi:
                raise InvalidRequest(f"{name} must be between {lo} and {hi} (got {value})")
        if self.lora_rank is not None:
            if not 1 <= self.lora_rank <= MAX_LORA_RANK:
                raise InvalidRequest(f"--lora-rank must be between 1 and {MAX_LORA_RANK} (got {self.lora_rank})")
            if self.quant != "none" or self.compile:
                raise InvalidRequest("--lora-rank times LoRAs on the plain transformer; drop --quant and --compile")
        if self.layers is not None and self.layers < 1:
            raise InvalidRequest(f"--layers must be at least 1 (got {self.layers})")
        if self.memory_gb is not None and not self.memory_gb > 0:
            raise InvalidRequest(f"--memory must be a positive number of GB (got {self.memory_gb})")
        return arch


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidRequest(f"{flag} must be one of {', '.join(choices)} (got {value!r})")


def run_bench(options: BenchOptions, progress: Progress | None = None) -> BenchReport:
    """Refuse (``DoesNotFit``) or build, measure and report."""
    arch = options.validate()
    say = progress or (lambda message: None)
    import torch

    device = pick_device(options.device, mps=False)
    dtype_name = options.dtype if options.dtype != "auto" else ("bf16" if device == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    _check_quant(options.quant, device)
    if device == "cpu":
        torch.set_flush_denormal(True)  # random weights must not hit the slow denormal path

    config = arch.transformer_config(options.layers)
    n_img = image_tokens(options.size, options.size)
    flops = transformer_flops(config, n_img, TEXT_TOKENS, options.batch)

    say("counting parameters on the meta device")
    transformer, vae = weights.build_on_meta(arch, config, options.vae)
    if options.quant != "none":
        weights.swap_quantized_linears(transformer, options.quant, dtype)
    params = sum(p.numel() for p in transformer.parameters())
    quantized, largest = weights.quantized_linear_stats(transformer, options.quant)
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
        need_text, free_text = _apart(estimate.total, free)
        raise DoesNotFit(f"{label} needs about {need_text} GB (weights {estimate.weights / GB:.1f} GB) "
                         f"but {free_source.format(f'{free_text} GB')}; try {', '.join(hints)}")

    described = describe_device(device)
    try:
        baseline = timing.memory_baseline(device)
        say("allocating random weights")

        def build() -> None:
            weights.materialize(transformer, device, dtype, options.seed)
            if vae is not None:
                weights.materialize(vae, device, dtype, options.seed + 1)

        build_s = timing.timed(device, build)
        if options.compile:
            transformer.compile_repeated_blocks()
        inputs = timing.transformer_inputs(config, options.size, options.batch, device, dtype, options.seed)
        latents = None if vae is None else timing.vae_latents(vae, options.size, options.batch, device, dtype,
                                                               options.seed)
        passes = timing.time_passes(transformer, vae, inputs, latents, steps=options.steps,
                                    warmup=options.warmup, device=device, say=say, compiling=options.compile)
        peak, peak_kind = timing.peak_memory(device)
        cached = decoded = loras = None
        if options.cache != "off":
            say(f"a {options.steps}-step loop without and with --cache {options.cache}")
            cached = asdict(compare.compare_cache(transformer, inputs, options.cache, options.steps, device))
            cached["speedup"] = round(cached["plain_s"] / cached["cached_s"], 3)
        if options.lora_rank is not None:
            say(f"steps with no LoRA, one, three stacked and one fused, of rank {options.lora_rank}")
            loras = asdict(compare_loras(transformer, inputs, options.lora_rank, options.steps, device,
                                         options.seed + 3))
        if options.decoder == "small":
            say("decoding with the small decoder")
            decoded = asdict(compare.compare_decoder(vae, arch.vae_config(), latents, device, dtype,
                                                     options.seed + 2))
            decoded["speedup"] = round(decoded["full_s"] / decoded["small_s"], 3)
        say("measuring the device's matmul ceiling")
        gemm = timing.measured_gemm_tflops(device, dtype)
    except torch.OutOfMemoryError:
        raise OutOfMemory(f"{label} ran out of device memory although the estimate said "
                          f"{estimate.total / GB:.1f} GB would do; try a smaller --size or --batch") from None

    return BenchReport(
        arch=arch.name,
        description=arch.description,
        nominal_params=arch.nominal,
        blocks=Blocks(double=config["num_layers"], single=config["num_single_layers"],
                      full_double=arch.num_layers, full_single=arch.num_single_layers),
        params=Params(transformer=params, vae=vae_params),
        size=options.size,
        image_tokens=n_img,
        text_tokens=TEXT_TOKENS,
        batch=options.batch,
        steps=options.steps,
        dtype=dtype_name,
        quant=options.quant,
        compile=options.compile,
        device=described,
        # On the CPU the process peak includes Python, torch and diffusers themselves.
        memory=MemoryUse(estimate_gb=estimate.as_gb(), free_gb=round(free / GB, 2),
                         free_source=free_source.format("free"), peak_gb=round(peak, 2), peak_kind=peak_kind,
                         baseline_gb=round(baseline / GB, 2),
                         peak_above_baseline_gb=round(peak - baseline / GB, 2)),
        flops=Flops(per_step=flops.total, attention_share=round(flops.attention / flops.total, 3)),
        timing=passes.timing(build_s, options.batch),
        tflops=Tflops(achieved=round(flops.total / passes.step_s / 1e12, 3),
                      spec_peak=timing.spec_peak_tflops(described["name"], dtype_name) if device == "cuda" else None,
                      measured_gemm=round(gemm, 3)),
        cache=cached,
        decoder=decoded,
        loras=loras,
    )


def _run_label(arch: Architecture, config: dict[str, Any], options: BenchOptions, dtype: str) -> str:
    depth = ""
    if options.layers is not None:
        depth = f" ({config['num_layers']}+{config['num_single_layers']} blocks)"
    quant = "" if options.quant == "none" else f" {options.quant}"
    return f"{arch.name}{depth} at {options.size}px, batch {options.batch}, {dtype}{quant}"


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


def _apart(need: float, free: float) -> tuple[str, str]:
    """Two byte counts in GB with the decimals that tell them apart: never "needs 22.3 GB but
    only 22.3 GB"."""
    for digits in (1, 2, 3):
        need_text, free_text = f"{need / GB:.{digits}f}", f"{free / GB:.{digits}f}"
        if need_text != free_text:
            break
    return need_text, free_text


def _free_memory(device: str, override_gb: float | None) -> tuple[float, str]:
    """Bytes free, and a phrase to say so ("{}" is where the amount goes)."""
    if override_gb is not None:
        return override_gb * GB, "--memory allows {}"
    free = free_accelerator_bytes(device)
    if free is not None:
        return float(free), "the GPU has {} free"
    return available_ram(), "only {} of RAM is available"
