"""`flux2 info`: versions, device, and the model registry, without importing torch."""

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from flux2cli.probe import available_ram, library_versions, probe_device
from flux2cli.settings import ENV_VARS, config_path, default_model, hf_hub_cache
from flux2cli.settings import describe as settings_report

if TYPE_CHECKING:
    from flux2cli.pipeline.registry import ModelSpec


def _cached(repo: str, filename: str) -> Path | None:
    """``filename`` of ``repo``'s main revision in the hub cache, as the offline loader finds it.

    huggingface_hub resolves its own layout (refs/main to a snapshot). Importing it pulls in
    httpx (~0.15 s), paid by `flux2 info` only, never by ``--help``.
    """
    cache = hf_hub_cache()
    if not cache.is_dir():  # nothing downloaded yet: no need to pay for the import
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=cache)
    return Path(found) if isinstance(found, str) else None  # else None or "known to be missing"


def cache_status(spec: "ModelSpec") -> str:
    """"yes" (all a local-encoder run needs), "no encoder" (enough with a remote encoder), or "no"."""
    if spec.local_dir is not None:
        return "yes" if (spec.local_dir / "model_index.json").is_file() else "no"
    if spec.gguf is not None and spec.gguf.repo is not None:
        if _cached(spec.gguf.repo, spec.gguf.filename) is None:
            return "no"
    index = _cached(spec.repo, "model_index.json") if spec.repo else None
    if index is None:
        return "no"
    folder = index.parent  # the snapshot: the repo's own layout from here on
    if not (folder / "vae").is_dir():
        return "no"
    if spec.gguf is None and not any((folder / "transformer").glob("*.safetensors*")):
        return "no"
    has_encoder = (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir()
    return "yes" if has_encoder else "no encoder"


def model_row(spec: "ModelSpec", device: dict[str, Any], ram_bytes: float) -> dict[str, Any]:
    from flux2cli.fits import fits

    status = cache_status(spec)
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
        "fits": fits(spec, device, ram_bytes),  # yes | offload | no, on this machine
        "source": spec.repo or "embedded",
        "gguf": None if spec.gguf is None else f"{spec.gguf.repo}/{spec.gguf.filename}",
    }


def info(
    image: Annotated[Optional[Path], typer.Argument(
        metavar="IMAGE.png", show_default=False,
        help="Show the generation parameters stored in this PNG instead (ours, or A1111-style).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
    probe: Annotated[bool, typer.Option("--probe", help="Ask torch about the device (slower).")] = False,
    lora_dir: Annotated[Optional[Path], typer.Option(
        "--lora-dir", metavar="DIR", show_default=False,
        help="List the LoRAs in this folder (else FLUX2_LORA_DIR or config.toml's lora_dir) and the shipped ones.")
    ] = None,
) -> None:
    """Show what is installed, which models exist, and what this machine can run; or what an image was made with."""
    if image is not None:
        from flux2cli.commands.image_info import show_image_parameters

        show_image_parameters(image, json_output)
        return
    from flux2cli.pipeline.registry import MODELS

    device = probe_device(with_torch=probe)
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": library_versions(),
        "device": device,
        "default_model": default_model(),
        "ram_free_gb": round(available_ram() / 1024**3, 1),
        "models": [model_row(spec, device, available_ram()) for spec in MODELS],
        "environment": ENV_VARS,
        "config_file": {"path": str(config_path()), "exists": config_path().is_file()},
        "settings": settings_report(),
        "loras": _loras(lora_dir),
    }
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _loras(lora_dir: Optional[Path]) -> list[dict[str, Any]]:
    """Read from the files' headers only (no torch)."""
    from flux2cli.lora.files import LoraCatalog
    from flux2cli.settings import resolve

    return LoraCatalog(resolve("lora_dir", lora_dir)).describe()


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
    for column in ("name", "quant", "steps", "licence", "gated", "cached", "GB +enc", "dl GB", "fits"):
        table.add_column(column, no_wrap=True)
    for row in report["models"]:
        encoder = f" +{row['encoder_memory_gb']:g}" if row["encoder_memory_gb"] else ""
        download = "—" if row["download_gb"] is None else f"~{row['download_gb']:g}"
        table.add_row(row["name"], row["quantization"], str(row["default_steps"]), _short_license(row["license"]),
                      "yes" if row["gated"] else "no", row["cache_status"], f"~{row['memory_gb']:g}{encoder}",
                      download, row["fits"])
    console.print(table)
    if not any(row["fits"] == "yes" for row in report["models"] if row["name"] != "tiny"):
        console.print(f"fits: this {device['type']}, {report['ram_free_gb']:g} GB of RAM free; "
                      "--model tiny runs anywhere")
    config = report["config_file"]
    console.print(f"Config file: {escape(config['path'])} ({'found' if config['exists'] else 'none; it is optional'})")
    settings = Table(title="Settings (flag > environment > config file > default)")
    for column in ("variable", "config.toml key", "value", "from"):
        settings.add_column(column, overflow="fold")
    for row in report["settings"]:
        value = "—" if row["value"] is None else str(row["value"])
        settings.add_row(row["env"], row["key"] or "—", escape(value), row["source"])
    console.print(settings)
    loras = Table(title="LoRAs (shipped, and in the LoRA folder)", box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("name", "made for", "rank", "format"):
        loras.add_column(column)
    for row in report["loras"]:
        loras.add_row(escape(row["name"]), escape(row["family"]), str(row["rank"] or "—"), row["format"] or "—")
    console.print(loras)


def _short_license(license: str) -> str:
    """The table's column; the full name is in `flux2 info --json` and docs/models.md."""
    from rich.markup import escape

    return "FLUX NC" if "Non-Commercial" in license else escape(license)
