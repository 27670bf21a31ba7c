"""`flux2 serve --encoder-only`: a model's text encoder alone, for `--remote-encoder` elsewhere.

The encoder protocol (``POST /predict``, ``GET /health``) is served by
``flux2cli.encoder.server`` under the main server's middlewares and runner, so the same
safe defaults apply; only the text encoder and its tokenizer are loaded.
"""

from __future__ import annotations

from typing import Any

import typer

DEFAULT_ENCODER_PORT = 2223  # next to the main server's 2222, so both run on one machine


def check_encoder_only(*, remote_encoder: str | None, lora: Any, cache: str | None, decoder: str,
                       compile: bool, replicas: int | None) -> None:
    """Options that only a generating server uses are refused, not silently dropped."""
    from flux2cli.errors import InvalidRequest

    unused = [name for name, given in (("--remote-encoder", remote_encoder), ("--lora", lora), ("--cache", cache),
                                       ("--decoder small", decoder != "full"), ("--compile", compile),
                                       ("--replicas", replicas is not None)) if given]
    if unused:
        raise InvalidRequest(f"--encoder-only serves this machine's text encoder and generates nothing; "
                             f"drop {', '.join(unused)}")


def serve_encoder(spec: Any, *, host: str | None, port: int | None, api_key: str | None, cors_origin: str | None,
                  offload: str) -> None:
    """Load ``spec``'s text encoder and serve it until Ctrl-C or SIGTERM."""
    from flux2cli import settings
    from flux2cli.api import load_options
    from flux2cli.console import notice, stderr
    from flux2cli.encoder.server import make_encoder_app
    from flux2cli.pipeline.loading import load_text_encoder
    from flux2cli.server.app import check_can_listen, serve_app
    from flux2cli.server.config import ServerConfig, parse_origin
    from flux2cli.settings import DEFAULT_HOST

    # FLUX2_PORT is the generating server's port: an encoder started beside it takes its own.
    config = ServerConfig(host=settings.resolve("host", host) or DEFAULT_HOST,
                          port=DEFAULT_ENCODER_PORT if port is None else port,
                          api_key=settings.resolve("api_key", api_key) or None,
                          cors_origin=parse_origin(cors_origin) if cors_origin else None)
    check_can_listen(config.host, config.port)
    if warning := config.exposure_warning():
        stderr.print(f"[bold yellow]warning:[/] {warning}", markup=True)
    options = load_options(offload=offload, local_encoder=True, notify=notice)
    with stderr.status(f"loading the text encoder of {spec.display_name}…"):
        encoder = load_text_encoder(spec, options)

    def ready(url: str) -> None:
        typer.echo(f"flux2 serve: the text encoder of {spec.display_name} on {url}  "
                   f"(--remote-encoder {url}; Ctrl-C stops)")
        import sys

        sys.stdout.flush()

    serve_app(lambda: make_encoder_app(encoder, spec=spec, config=config), on_ready=ready)
    stderr.print("stopped")
