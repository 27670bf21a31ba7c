"""Option types shared by every command that loads a model (the spec's flag names)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from flux2cli.pipeline.fields import FIELD

MODEL_PANEL = "Model"


def complete_model(incomplete: str) -> list[str]:
    from flux2cli.pipeline.registry import MODELS

    return [spec.name for spec in MODELS if spec.name.startswith(incomplete.lower())]


def choices(*values: str):
    """A shell-completion callback offering ``values``."""
    return lambda incomplete: [value for value in values if value.startswith(incomplete.lower())]


# No envvar= on these: settings.resolve reads FLUX2_* and config.toml for every front end, so
# the flag must reach the command as None when the user did not type it.
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", rich_help_panel=MODEL_PANEL, autocompletion=complete_model, show_default=False,
    help="Registry name (see `flux2 info`): dev-bnb4 (default), dev, dev-gguf-q8, klein-4b, tiny, ... "
         "Else FLUX2_MODEL or config.toml's model.")]
FullModelOpt = Annotated[bool, typer.Option(
    "--full-model", rich_help_panel=MODEL_PANEL, help="Shorthand for --model dev (bf16 FLUX.2 [dev]).")]
GGUFOpt = Annotated[Optional[str], typer.Option(
    "--gguf", rich_help_panel=MODEL_PANEL, metavar="bf16|q8|q4|PATH", autocompletion=choices("bf16", "q8", "q4"),
    help="GGUF transformer: shorthand for --model dev-gguf-QUANT, or a local .gguf file.")]
LocalEncoderOpt = Annotated[bool, typer.Option(
    "--local-encoder", rich_help_panel=MODEL_PANEL, help="Encode prompts with the model's own text encoder.")]
RemoteEncoderOpt = Annotated[Optional[str], typer.Option(
    "--remote-encoder", rich_help_panel=MODEL_PANEL, metavar="URL",
    help="Encode prompts at this endpoint (POST {\"prompt\"} -> tensor). FLUX.2-dev models also read "
         "FLUX2_ENCODER_URL or config.toml's encoder_url, else try the public endpoint; if unreachable, "
         "the local encoder is used.")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", rich_help_panel=MODEL_PANEL,
    help="Compile the transformer's blocks (first image slow; each new size recompiles).")]
OffloadOpt = Annotated[str, typer.Option(
    "--offload", rich_help_panel=MODEL_PANEL, metavar="auto|none|model|sequential",
    autocompletion=choices("auto", "none", "model", "sequential"),
    help="Move weights to the CPU between uses; auto decides from free GPU memory.")]
VaeTilingOpt = Annotated[str, typer.Option(
    "--vae-tiling", rich_help_panel=MODEL_PANEL, metavar="auto|on|off", autocompletion=choices("auto", "on", "off"),
    help="Decode the image in tiles; auto tiles above 2 MP.")]
CacheOpt = Annotated[Optional[str], typer.Option(
    "--cache", rich_help_panel=MODEL_PANEL, metavar="|".join(FIELD["cache"].choices), show_default=False,
    autocompletion=choices(*FIELD["cache"].choices), help=FIELD["cache"].option_help())]
DecoderOpt = Annotated[str, typer.Option(
    "--decoder", rich_help_panel=MODEL_PANEL, metavar="full|small", autocompletion=choices("full", "small"),
    help="small: decode with BFL's FLUX.2-small-decoder (faster decoding, nearly the same image; downloaded "
         "from the hub).")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", "-s", show_default=False, help=FIELD["steps"].option_help())]
NoPreviewOpt = Annotated[bool, typer.Option(
    "--no-preview", help="Draw no image preview under the progress bar (else FLUX2_PREVIEW).")]
OutputDirOpt = Annotated[Optional[Path], typer.Option(
    "--output-dir", "-o", show_default=False,
    help="Where images and .prompt files go (else FLUX2_OUTPUT_DIR, config.toml's output_dir, ./outputs).")]


def load_engine(spec: Any, *, local_encoder: bool, remote_encoder: str | None, compile: bool, offload: str,
                vae_tiling: str, cache: str | None = None, decoder: str = "full") -> Any:
    """The model flags above and the settings, checked, then the model loaded under a spinner
    (every loading command: generate, repl, serve). ``cache``: the step caching of requests
    that name none (checked as the request field, so a bad value fails before loading)."""
    from flux2cli.api import load_options
    from flux2cli.console import notice, stderr
    from flux2cli.pipeline.engine import Engine

    cache = FIELD["cache"].check(cache, label="--cache")
    options = load_options(local_encoder=local_encoder, remote_encoder=remote_encoder, compile=compile,
                           offload=offload, vae_tiling=vae_tiling, decoder=decoder, notify=notice)
    with stderr.status(f"loading {spec.display_name}…"):
        engine = Engine.load(spec, options)
    engine.default_cache = cache or engine.default_cache
    return engine


LORA_PANEL = "LoRA"


def complete_lora(incomplete: str) -> list[str]:
    from flux2cli.lora.files import available

    return [name for name in available() if name.startswith(incomplete)]


LoraOpt = Annotated[Optional[list[str]], typer.Option(
    "--lora", rich_help_panel=LORA_PANEL, metavar="SOURCE[:SCALE]", autocompletion=complete_lora, show_default=False,
    help="Apply a LoRA: a .safetensors file, a folder, a hub repo (owner/name[/file.safetensors]), or a name "
         "in --lora-dir or shipped with flux2 (tiny-colours). SCALE defaults to 1 and may be negative; "
         "repeat to stack.")]
LoraDirOpt = Annotated[Optional[Path], typer.Option(
    "--lora-dir", rich_help_panel=LORA_PANEL, metavar="DIR", show_default=False,
    help="Folder whose LoRAs are available by name (else FLUX2_LORA_DIR or config.toml's lora_dir).")]
LoraFuseOpt = Annotated[bool, typer.Option(
    "--lora-fuse", rich_help_panel=LORA_PANEL,
    help="Merge the LoRAs into the weights (faster steps; not on 4-bit or GGUF weights).")]
LoraPartialOpt = Annotated[bool, typer.Option(
    "--lora-partial", rich_help_panel=LORA_PANEL,
    help="Load a LoRA even when some of its keys match no layer of the model (they are counted and skipped).")]


def lora_catalog(sources: list[str] | None, lora_dir: Path | None) -> tuple[Any, list[Any]]:
    """The LoRAs a command makes available and the ``--lora`` refs, resolved before the model loads."""
    from flux2cli.lora.files import LoraCatalog
    from flux2cli.settings import resolve

    catalog = LoraCatalog(resolve("lora_dir", lora_dir))
    return catalog, catalog.add_refs(sources or [])


def use_loras(engine: Any, catalog: Any, refs: list[Any], *, fuse: bool, partial: bool) -> None:
    """Give the loaded engine its LoRAs and load the --lora ones now, so a bad file fails at once."""
    from flux2cli.console import notice

    engine.loras.configure(catalog, defaults=refs, fuse=fuse, partial=partial)
    engine.loras.apply(tuple(refs))
    for message in engine.loras.notices:
        notice(message)
    engine.loras.notices.clear()
