"""`flux2 repl`: load the model once, then prompt (the spec's interactive loop)."""

import typer

from flux2cli.commands import options as opt


def repl(
    model: opt.ModelOpt = None,
    steps: opt.StepsOpt = None,
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
    no_preview: opt.NoPreviewOpt = False,
) -> None:
    """Interactive prompt loop: history, Tab completion, /commands, cached embeddings."""
    from flux2cli.pipeline.registry import resolve_model
    from flux2cli.repl.app import run_repl
    from flux2cli.repl.loras import ReplLoras
    from flux2cli.repl.session import ReplSession
    from flux2cli.settings import default_model
    from flux2cli.settings import output_dir as resolve_output_dir

    spec = resolve_model(model, full_model=full_model, gguf=gguf, default=default_model())
    output_dir = resolve_output_dir(output_dir)
    session = ReplSession(spec, steps=steps, output_dir=output_dir)  # a bad --steps fails before loading
    catalog, loras = opt.lora_catalog(lora, lora_dir)

    engine = opt.load_engine(spec, local_encoder=local_encoder, remote_encoder=remote_encoder, compile=compile,
                             offload=offload, vae_tiling=vae_tiling, cache=cache, decoder=decoder)
    opt.use_loras(engine, catalog, loras, fuse=lora_fuse, partial=lora_partial)
    session.loras = ReplLoras(catalog, loras)
    session.loras.load = engine.loras.load
    raise typer.Exit(run_repl(session, engine, output_dir, preview=False if no_preview else None))
