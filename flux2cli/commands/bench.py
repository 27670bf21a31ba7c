"""`flux2 bench`: time a FLUX.2 architecture at its real size with random weights (no download)."""

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from flux2cli.bench.report import BenchReport

ARCHS = "klein-4b|klein-9b|dev|tiny-arch"


def bench(
    arch: Annotated[str, typer.Option(
        "--arch", "-a", metavar=ARCHS, help="Architecture to build (tiny-arch: a seconds-long smoke run).",
    )] = "klein-4b",
    size: Annotated[int, typer.Option("--size", help="Square image side in pixels (multiple of 16).")] = 1024,
    steps: Annotated[int, typer.Option("--steps", "-s", help="Timed transformer steps.")] = 4,
    dtype: Annotated[str, typer.Option("--dtype", metavar="auto|bf16|fp32",
                                       help="auto: bf16 on a GPU, fp32 on the CPU.")] = "auto",
    quant: Annotated[str, typer.Option("--quant", metavar="none|nf4|gguf-q8",
                                       help="Quantize the transformer blocks' linears.")] = "none",
    batch: Annotated[int, typer.Option("--batch", "-n", help="Images per forward pass.")] = 1,
    compile: Annotated[bool, typer.Option("--compile", help="Compile the repeated blocks (warm-up pays).")] = False,
    layers: Annotated[Optional[int], typer.Option(
        "--layers", help="Build at most N double and N single blocks (quick runs, CI).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed passes before timing.")] = 1,
    vae: Annotated[bool, typer.Option("--vae/--no-vae", help="Also build and time the VAE decoder.")] = True,
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="Where to run.")] = "auto",
    memory: Annotated[Optional[float], typer.Option(
        "--memory", metavar="GB", help="Plan for this much free memory instead of what the device has.")] = None,
    cache: Annotated[str, typer.Option(
        "--cache", metavar="off|taylorseer|fbc",
        help="Also run --steps denoising steps without and with this step cache; report the speed ratio.")] = "off",
    decoder: Annotated[str, typer.Option(
        "--decoder", metavar="full|small",
        help="small: also decode with BFL's small decoder's shape; report the decode speed ratio.")] = "full",
    lora_rank: Annotated[Optional[int], typer.Option(
        "--lora-rank", metavar="R", show_default=False,
        help="Also time steps with random LoRAs of rank R on every block linear: none, one, three stacked, "
             "one fused, and a swap between two.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Measure s/step, s/image, peak memory and TFLOP/s of a FLUX.2 architecture, or say it won't fit."""
    from flux2cli.bench.runner import BenchOptions, run_bench
    from flux2cli.console import stderr

    options = BenchOptions(arch=arch, size=size, steps=steps, dtype=dtype, quant=quant, batch=batch,
                           compile=compile, layers=layers, warmup=warmup, vae=vae, device=device,
                           memory_gb=memory, cache=cache, decoder=decoder, lora_rank=lora_rank)
    options.validate()  # usage errors before the slow torch import
    with stderr.status("flux2 bench: importing torch…") as status:
        report = run_bench(options, progress=lambda message: status.update(f"flux2 bench: {message}…"))
    if json_output:
        typer.echo(json.dumps(report.as_json()))
        return
    for line in format_report(report):
        typer.echo(line)


def format_report(report: "BenchReport") -> list[str]:
    blocks, params, memory = report.blocks, report.params, report.memory
    timing, tflops, device = report.timing, report.tflops, report.device
    depth = f"{blocks.double} double + {blocks.single} single blocks"
    if (blocks.double, blocks.single) != (blocks.full_double, blocks.full_single):
        depth += f" of {blocks.full_double} + {blocks.full_single}"
    decode = timing.vae_decode_s
    ceiling = f"{tflops.measured_gemm:.3g} TFLOP/s measured GEMM"
    if tflops.spec_peak:
        ceiling = f"{tflops.spec_peak:g} TFLOP/s datasheet peak, {ceiling}"
    return [
        f"{report.arch}: {depth}, {_count(params.transformer)} transformer parameters "
        f"(nominal {report.nominal_params}), VAE {_count(params.vae)}",
        f"  {report.size}x{report.size}: {report.image_tokens} image + {report.text_tokens} text tokens, "
        f"batch {report.batch}, {report.dtype}, quant {report.quant}" + (", compiled" if report.compile else ""),
        f"  device        {device['name']} ({device['type']})",
        f"  s/step        {timing.step_s:.4f} (median of {report.steps}; warm-up {timing.warmup_s:.1f} s)",
        "  VAE decode    " + ("skipped (--no-vae)" if decode is None else f"{decode:.4f} s"),
        f"  s/image       {timing.image_s:.4f} ({report.steps} steps + decode, per image of the batch)",
        f"  memory        peak {memory.peak_gb:.2f} GB ({memory.peak_kind}, "
        f"{memory.peak_above_baseline_gb:.2f} GB above the {memory.baseline_gb:.2f} GB before building); "
        f"estimated {memory.estimate_gb['total']:.2f} GB of {memory.free_gb:.1f} GB free",
        f"  compute       {report.flops.per_step / 1e12:.4g} TFLOP/step "
        f"({report.flops.attention_share:.0%} attention), achieved {tflops.achieved:.3g} TFLOP/s "
        f"vs {ceiling}",
    ] + _comparisons(report)


def _comparisons(report: "BenchReport") -> list[str]:
    lines = []
    if report.cache:
        c = report.cache
        lines.append(f"  --cache {c['mode']}  {c['steps']} steps in {c['cached_s']:.3f} s vs {c['plain_s']:.3f} s "
                     f"without: {c['speedup']:.2f}x ({c['full_evaluations']} of {c['steps']} full evaluations; "
                     "random weights)")
    if report.decoder:
        d = report.decoder
        lines.append(f"  --decoder small  decode {d['small_s']:.4f} s vs {d['full_s']:.4f} s: {d['speedup']:.2f}x "
                     f"(decoder {_count(d['small_params'])})")
    if report.loras:
        r = report.loras
        lines.append(f"  --lora-rank {r['rank']}  s/step {r['base_s']:.4f} without; one LoRA "
                     f"{r['one_s'] / r['base_s']:.2f}x, three stacked {r['three_s'] / r['base_s']:.2f}x, "
                     f"one fused {r['fused_s'] / r['base_s']:.2f}x of it; swap {r['swap_s'] * 1000:.1f} ms "
                     f"({r['modules']} layers, {_count(r['adapter_params'])} parameters per LoRA)")
    return lines


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"
