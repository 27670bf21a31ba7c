"""`flux2 info`: versions, device, and the model registry, without importing torch."""

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from flux2cli.settings import ENV_VARS, config_path, hf_hub_cache
from flux2cli.settings import describe as settings_report

if TYPE_CHECKING:
    from flux2cli.pipeline.registry import ModelSpec

LIBRARIES = ("flux2cli", "torch", "diffusers", "transformers", "huggingface_hub", "accelerate",
             "bitsandbytes", "gguf", "aiohttp", "prompt_toolkit", "typer")


def library_versions() -> dict[str, str | None]:
    from importlib import metadata  # 15 ms: not paid by `flux2 --help`

    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def probe_device(with_torch: bool) -> dict[str, Any]:
    """The accelerator: from torch when asked (slow import), else from nvidia-smi."""
    if with_torch:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return {"type": "cuda", "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return {"type": "mps", "name": "Apple GPU", "memory_gb": None}
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "memory_gb": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5, check=True).stdout.splitlines()[0]
            name, memory_mib = (part.strip() for part in out.split(","))
            return {"type": "cuda", "name": name, "memory_gb": round(float(memory_mib) / 1024, 1)}
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            pass
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return {"type": "mps", "name": "Apple GPU", "memory_gb": None}
    return {"type": "cpu", "name": platform.machine(), "memory_gb": None}


def _snapshot(repo: str):
    """The cached snapshot folder of ``repo``'s main revision (as huggingface_hub lays it out)."""
    repo_dir = hf_hub_cache() / f"models--{repo.replace('/', '--')}"
    ref = repo_dir / "refs" / "main"
    snapshots = repo_dir / "snapshots"
    if ref.is_file():
        folder = snapshots / ref.read_text().strip()
        return folder if folder.is_dir() else None
    if snapshots.is_dir():  # a cache filled by revision only
        return next((p for p in sorted(snapshots.iterdir()) if p.is_dir()), None)
    return None


def cache_status(spec: "ModelSpec") -> str:
    """"yes" (all a local-encoder run needs), "no encoder" (enough with a remote encoder), or "no"."""
    if spec.local_dir is not None:
        return "yes" if (spec.local_dir / "model_index.json").is_file() else "no"
    if spec.gguf is not None and spec.gguf.repo is not None:
        gguf_folder = _snapshot(spec.gguf.repo)
        if gguf_folder is None or not (gguf_folder / spec.gguf.filename).exists():
            return "no"
    folder = _snapshot(spec.repo) if spec.repo else None
    if folder is None or not (folder / "model_index.json").is_file() or not (folder / "vae").is_dir():
        return "no"
    if spec.gguf is None and not any((folder / "transformer").glob("*.safetensors*")):
        return "no"
    has_encoder = (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir()
    return "yes" if has_encoder else "no encoder"


def model_row(spec: "ModelSpec", device: dict[str, Any]) -> dict[str, Any]:
    status = cache_status(spec)
    memory = device.get("memory_gb")
    return {
        "name": spec.name,
        "display_name": spec.display_name,
        "pipeline": spec.pipeline_class,
        "quantization": spec.quantization,
        "default_steps": spec.default_steps,
        "license": spec.license,
        "gated": spec.gated,
        "cached": status != "no",  # enough to run (with a remote encoder for [dev])
        "cache_status": status,
        "memory_gb": spec.memory_gb,
        "encoder_memory_gb": spec.encoder_memory_gb,
        "download_gb": spec.download_gb,
        "fits": None if memory is None else spec.memory_gb <= memory,
        "source": spec.repo or "embedded",
        "gguf": None if spec.gguf is None else f"{spec.gguf.repo}/{spec.gguf.filename}",
    }


def info(
    image: Annotated[Optional[Path], typer.Argument(
        metavar="IMAGE.png", show_default=False,
        help="Show the generation parameters stored in this PNG instead (ours, or A1111-style).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
    probe: Annotated[bool, typer.Option("--probe", help="Ask torch about the device (slower).")] = False,
) -> None:
    """Show what is installed, which models exist, and what this machine can run; or what an image was made with."""
    if image is not None:
        from flux2cli.commands.image_info import show_image_parameters

        show_image_parameters(image, json_output)
        return
    from flux2cli.pipeline.registry import MODELS, default_model_name

    device = probe_device(with_torch=probe)
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": library_versions(),
        "device": device,
        "default_model": default_model_name(),
        "models": [model_row(spec, device) for spec in MODELS],
        "environment": ENV_VARS,
        "config_file": {"path": str(config_path()), "exists": config_path().is_file()},
        "settings": settings_report(),
    }
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich import box
    from rich.table import Table

    console = Console(highlight=False)
    versions = "  ".join(f"{k} {v or '—'}" for k, v in report["versions"].items())
    device = report["device"]
    memory = f", {device['memory_gb']} GB" if device["memory_gb"] else ""
    console.print(f"Python {report['python']} on {report['platform']}")
    console.print(versions)
    console.print(f"Device: {device['type']} ({device['name']}{memory})")
    # compact cells, no borders: the table fits an 80-column terminal without cutting a name
    table = Table(title=f"Models (default: {report['default_model']})", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("name", "quant", "steps", "licence", "gated", "cached", "GB", "+enc GB", "dl GB"):
        table.add_column(column, no_wrap=True)
    for row in report["models"]:
        fits = "" if row["fits"] is None else (" ✓" if row["fits"] else " ✗")
        encoder = f"+{row['encoder_memory_gb']:g}" if row["encoder_memory_gb"] else "—"
        download = "—" if row["download_gb"] is None else f"~{row['download_gb']:g}"
        table.add_row(row["name"], row["quantization"], str(row["default_steps"]), _short_license(row["license"]),
                      "yes" if row["gated"] else "no", row["cache_status"], f"~{row['memory_gb']:g}{fits}",
                      encoder, download)
    console.print(table)
    config = report["config_file"]
    console.print(f"Config file: {escape(config['path'])} ({'found' if config['exists'] else 'none; it is optional'})")
    settings = Table(title="Settings (flag > environment > config file > default)")
    for column in ("variable", "config.toml key", "value", "from"):
        settings.add_column(column, overflow="fold")
    for row in report["settings"]:
        value = "—" if row["value"] is None else str(row["value"])
        settings.add_row(row["env"], row["key"] or "—", escape(value), row["source"])
    console.print(settings)


def _short_license(license: str) -> str:
    """The table's column; the full name is in `flux2 info --json` and docs/models.md."""
    from rich.markup import escape

    return "FLUX NC" if "Non-Commercial" in license else escape(license)
