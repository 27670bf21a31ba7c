"""`flux2 serve`: the spec's REST API and the web UI, on 127.0.0.1:2222 by default."""

from typing import Annotated, Optional

import typer

from flux2cli.commands import options as opt

SCALE_PANEL = "Scale-out (Ray Serve)"


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
    encoder_only: Annotated[bool, typer.Option(
        "--encoder-only",
        help="Serve only the model's text encoder (POST /predict, GET /health; port 2223 unless --port) for "
             "--remote-encoder http://HOST:PORT on other machines; the transformer and VAE are not "
             "loaded.")] = False,
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
    replicas: Annotated[Optional[int], typer.Option(
        "--replicas", min=1, max=256, rich_help_panel=SCALE_PANEL, show_default=False,
        help="Generate on this many Ray Serve replicas (transformer + VAE each), that many at once; needs "
             "pip install 'flux2cli[scale]'. Without it the model runs in this process.")] = None,
    encoder_replicas: Annotated[Optional[int], typer.Option(
        "--encoder-replicas", min=1, max=64, rich_help_panel=SCALE_PANEL, show_default=False,
        help="Replicas of the text encoder (default 1); with --replicas.")] = None,
    cpus_per_replica: Annotated[Optional[float], typer.Option(
        "--cpus-per-replica", min=0.0, rich_help_panel=SCALE_PANEL, show_default=False,
        help="Ray CPUs each generation replica takes (default 1); with --replicas.")] = None,
    gpus_per_replica: Annotated[Optional[float], typer.Option(
        "--gpus-per-replica", min=0.0, rich_help_panel=SCALE_PANEL, show_default=False,
        help="GPUs each replica (generation and encoder) takes, fractions allowed (default 0); with --replicas.")
    ] = None,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", metavar="ADDR", rich_help_panel=SCALE_PANEL, show_default=False,
        help="Join this Ray cluster (auto, HOST:6379 or ray://HOST:10001) instead of starting a local Ray "
             "instance; uses its running flux2 application if there is one (docs/scale-out.md).")] = None,
) -> None:
    """Serve the REST API and the web UI until Ctrl-C (SIGINT) or SIGTERM."""
    from flux2cli import settings
    from flux2cli.console import stderr
    from flux2cli.pipeline.registry import resolve_model
    from flux2cli.server.app import check_can_listen, run_server
    from flux2cli.pipeline.output import prepare_output_dir
    from flux2cli.server.config import ServerConfig, parse_origin
    from flux2cli.settings import DEFAULT_HOST, DEFAULT_PORT

    spec = resolve_model(model, full_model=full_model, gguf=gguf, default=settings.default_model())
    if encoder_only:
        from flux2cli.commands.encoder_only import check_encoder_only, serve_encoder

        check_encoder_only(remote_encoder=remote_encoder, lora=lora, cache=cache, decoder=decoder, compile=compile,
                           replicas=replicas)
        _log_to_stderr()
        serve_encoder(spec, host=host, port=port, api_key=api_key, cors_origin=cors_origin, offload=offload)
        return
    port = settings.resolve("port", port)
    config = ServerConfig(host=settings.resolve("host", host) or DEFAULT_HOST,
                          port=DEFAULT_PORT if port is None else port,
                          api_key=settings.resolve("api_key", api_key) or None,
                          output_dir=settings.output_dir(output_dir), queue_size=queue_size,
                          cors_origin=parse_origin(cors_origin) if cors_origin else None,
                          preview_every=None if no_previews else preview_every)
    scale = _scale_args(spec, replicas, encoder_replicas, cpus_per_replica, gpus_per_replica, ray_address,
                        lora=lora or lora_dir, local_encoder=local_encoder, remote_encoder=remote_encoder,
                        cache=cache, compile=compile, offload=offload, vae_tiling=vae_tiling, decoder=decoder)
    check_can_listen(config.host, config.port)
    catalog, loras = opt.lora_catalog(lora, lora_dir)  # the LoRAs requests may name; --lora: the default set
    prepare_output_dir(config.output_dir)  # before the model loads: a bad -o fails at once
    warning = config.exposure_warning()
    if warning:
        stderr.print(f"[bold yellow]warning:[/] {warning}", markup=True)
    _log_to_stderr()

    if scale is not None:
        from flux2cli.console import notice
        from flux2cli.scale.front_door import serve_on_ray

        serve_on_ray(spec, config, scale, ray_address=ray_address, notify=notice,
                     on_ready=_announce)
        stderr.print("stopped")
        return
    engine = opt.load_engine(spec, local_encoder=local_encoder, remote_encoder=remote_encoder, compile=compile,
                             offload=offload, vae_tiling=vae_tiling, cache=cache, decoder=decoder)
    opt.use_loras(engine, catalog, loras, fuse=lora_fuse, partial=lora_partial)

    def ready(url: str) -> None:
        typer.echo(f"flux2 serve: {engine.describe()['description']} on {url}  (Ctrl-C stops)", err=False)
        import sys

        sys.stdout.flush()

    run_server(engine, config, on_ready=ready)
    stderr.print("stopped")


def _scale_args(spec, replicas, encoder_replicas, cpus, gpus, ray_address, *, lora, local_encoder, remote_encoder,
                cache, compile, offload, vae_tiling, decoder) -> Optional[dict]:
    """``flux2cli.scale.build_app``'s args from the Ray options, checked; None without --replicas."""
    from flux2cli.errors import InvalidRequest

    if replicas is None:
        given = [name for name, value in (("--encoder-replicas", encoder_replicas), ("--cpus-per-replica", cpus),
                                          ("--gpus-per-replica", gpus), ("--ray-address", ray_address))
                 if value is not None]
        if given:
            raise InvalidRequest(f"{', '.join(given)} only go with --replicas N")
        return None
    refused = [name for name, value in (("--lora/--lora-dir", lora), ("--local-encoder", local_encoder),
                                        ("--remote-encoder", remote_encoder)) if value]
    if refused:
        raise InvalidRequest(f"{', '.join(refused)} cannot go with --replicas (the replicas load no LoRAs, "
                             "and the encoder deployment encodes every prompt)")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise InvalidRequest("--replicas needs Ray Serve: pip install 'flux2cli[scale]'")
    from flux2cli.api import load_options
    from flux2cli.pipeline.fields import FIELD

    options = {"compile": compile, "offload": offload, "vae_tiling": vae_tiling, "decoder": decoder}
    load_options(**options)  # a bad value fails here, not in every replica
    return {"model": spec.name, "replicas": replicas, "encoder_replicas": encoder_replicas or 1,
            "cpus_per_replica": 1.0 if cpus is None else cpus, "gpus_per_replica": gpus or 0.0,
            "options": options, "cache": FIELD["cache"].check(cache, label="--cache")}


def _announce(engine, url: str) -> None:
    counts = engine.replica_counts()
    typer.echo(f"flux2 serve: {engine.describe()['description']}, {counts['total']} replica(s), on {url}  "
               "(Ctrl-C stops)")
    import sys

    sys.stdout.flush()


def _log_to_stderr() -> None:
    import logging

    logger = logging.getLogger("flux2cli.server")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
