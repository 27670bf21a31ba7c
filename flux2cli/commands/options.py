"""Option types shared by every command that loads a model (the spec's flag names)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flux2cli.settings import DEFAULT_OUTPUT_DIR

MODEL_PANEL = "Model"

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", envvar="FLUX2_MODEL", rich_help_panel=MODEL_PANEL,
    help="Registry name (see `flux2 info`): dev-bnb4 (default), dev, dev-gguf-q8, klein-4b, tiny, ...")]
FullModelOpt = Annotated[bool, typer.Option(
    "--full-model", rich_help_panel=MODEL_PANEL, help="Shorthand for --model dev (bf16 FLUX.2 [dev]).")]
GGUFOpt = Annotated[Optional[str], typer.Option(
    "--gguf", rich_help_panel=MODEL_PANEL, metavar="bf16|q8|q4|PATH",
    help="GGUF transformer: shorthand for --model dev-gguf-QUANT, or a local .gguf file.")]
LocalEncoderOpt = Annotated[bool, typer.Option(
    "--local-encoder", rich_help_panel=MODEL_PANEL, help="Encode prompts with the model's own text encoder.")]
RemoteEncoderOpt = Annotated[Optional[str], typer.Option(
    "--remote-encoder", rich_help_panel=MODEL_PANEL, metavar="URL",
    help="Encode prompts at this endpoint (POST {\"prompt\"} -> tensor). FLUX.2-dev models also read "
         "FLUX2_ENCODER_URL, else try the public endpoint; if unreachable, the local encoder is used.")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", rich_help_panel=MODEL_PANEL,
    help="Compile the transformer's blocks (first image slow; each new size recompiles).")]
OffloadOpt = Annotated[str, typer.Option(
    "--offload", rich_help_panel=MODEL_PANEL, metavar="auto|none|model|sequential",
    help="Move weights to the CPU between uses; auto decides from free GPU memory.")]
VaeTilingOpt = Annotated[str, typer.Option(
    "--vae-tiling", rich_help_panel=MODEL_PANEL, metavar="auto|on|off",
    help="Decode the image in tiles; auto tiles above 2 MP.")]
StepsOpt = Annotated[Optional[int], typer.Option(
    "--steps", "-s", help="Inference steps (default and range come from the model).")]
OutputDirOpt = Annotated[Path, typer.Option(
    "--output-dir", "-o", envvar="FLUX2_OUTPUT_DIR", help="Where images and .prompt files go.")]

DEFAULT_OUTPUT = Path(DEFAULT_OUTPUT_DIR)
