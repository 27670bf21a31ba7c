"""`flux2 serve`: the spec's REST API and the web UI, on 127.0.0.1:2222 by default."""

from typing import Annotated, Optional

import typer

from flux2cli.commands import options as opt


def serve(
    host: Annotated[Optional[str], typer.Option(
        "--host", show_default=False,
        help="Address to bind (default 127.0.0.1, else FLUX2_HOST); anything but loopback exposes the server "
             "to the network.")] = None,
    port: Annotated[Optional[int], typer.Option(
        "--port", "-p", min=0, max=65535, show_default=False,
        help="Port (default 2222, else FLUX2_PORT; 0 picks a free one).")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", show_default=False,
        help="Require this key (Authorization: Bearer KEY or X-API-Key) on every route but the UI page "
             "(else FLUX2_API_KEY).")] = None,
    queue_size: Annotated[int, typer.Option(
        "--queue-size", min=1, max=100, help="Jobs that may wait behind the running one (at most 100).")] = 8,
    no_previews: Annotated[bool, typer.Option(
        "--no-previews", help="Send no preview events on job streams (requests may also ask for none).")] = False,
    preview_every: Annotated[float, typer.Option(
        "--preview-every", metavar="SECONDS", min=0.0, max=60.0,
        help="At least this long between two previews of a job (and at most one a step).")] = 0.25,
    cors_origin: Annotated[Optional[str], typer.Option(
        "--cors-origin", metavar="ORIGIN", show_default=False,
        help="Let pages of this one origin (such as https://app.example.com) call the API from a browser; "
             "other origins stay refused. The API key is still needed.")] = None,
    model: opt.ModelOpt = None,
    output_dir: opt.OutputDirOpt = None,
    full_model: opt.FullModelOpt = False,
    gguf: opt.GGUFOpt = None,
    local_encoder: opt.LocalEncoderOpt = False,
    remote_encoder: opt.RemoteEncoderOpt = None,
    compile: opt.CompileOpt = False,
    offload: opt.OffloadOpt = "auto",
    vae_tiling: opt.VaeTilingOpt = "auto",
    cache: opt.CacheOpt = None,
    decoder: opt.DecoderOpt = "full",
    lora: opt.LoraOpt = None,
    lora_dir: opt.LoraDirOpt = None,
    lora_fuse: opt.LoraFuseOpt = False,
    lora_partial: opt.LoraPartialOpt = False,
) -> None:
    """Serve the REST API and the web UI until Ctrl-C (SIGINT) or SIGTERM."""
    from flux2cli import settings
    from flux2cli.console import stderr
    from flux2cli.pipeline.registry import resolve_model
    from flux2cli.server.app import check_can_listen, run_server
    from flux2cli.pipeline.output import prepare_output_dir
    from flux2cli.server.config import DEFAULT_HOST, DEFAULT_PORT, ServerConfig, parse_origin

    spec = resolve_model(model, full_model=full_model, gguf=gguf, default=settings.default_model())
    port = settings.resolve("port", port)
    config = ServerConfig(host=settings.resolve("host", host) or DEFAULT_HOST,
                          port=DEFAULT_PORT if port is None else port,
                          api_key=settings.resolve("api_key", api_key) or None,
                          output_dir=settings.output_dir(output_dir), queue_size=queue_size,
                          cors_origin=parse_origin(cors_origin) if cors_origin else None,
                          preview_every=None if no_previews else preview_every)
    check_can_listen(config.host, config.port)
    catalog, loras = opt.lora_catalog(lora, lora_dir)  # the LoRAs requests may name; --lora: the default set
    prepare_output_dir(config.output_dir)  # before the model loads: a bad -o fails at once
    warning = config.exposure_warning()
    if warning:
        stderr.print(f"[bold yellow]warning:[/] {warning}", markup=True)
    _log_to_stderr()

    engine = opt.load_engine(spec, local_encoder=local_encoder, remote_encoder=remote_encoder, compile=compile,
                             offload=offload, vae_tiling=vae_tiling, cache=cache, decoder=decoder)
    opt.use_loras(engine, catalog, loras, fuse=lora_fuse, partial=lora_partial)

    def ready(url: str) -> None:
        typer.echo(f"flux2 serve: {engine.describe()['description']} on {url}  (Ctrl-C stops)", err=False)
        import sys

        sys.stdout.flush()

    run_server(engine, config, on_ready=ready)
    stderr.print("stopped")


def _log_to_stderr() -> None:
    import logging

    logger = logging.getLogger("flux2cli.server")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
