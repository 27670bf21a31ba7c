"""`flux2 generate "prompt"`: one request, one engine call, files on disk."""

import json
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from flux2cli.commands import options as opt
from flux2cli.errors import GenerationCancelled, InvalidRequest
from flux2cli.pipeline.fields import FIELD


def generate(
    prompt: Annotated[Optional[str], typer.Argument(
        show_default=False,
        help="What to draw; inline modifiers like /portrait /2k work too, and {red|blue} makes one image per "
             "alternative. Optional with --from-image.")] = None,
    from_image: Annotated[Optional[Path], typer.Option(
        "--from-image", metavar="PNG", show_default=False,
        help="Re-run the settings stored in this image (ours, or A1111-style); options given here win.")] = None,
    model: opt.ModelOpt = None,
    orientation: Annotated[Optional[str], typer.Option(
        "--orientation", show_default=False, help=FIELD["orientation"].option_help())] = None,
    size: Annotated[Optional[str], typer.Option(
        "--size", show_default=False, help=FIELD["size"].option_help(" (1k, 2k, 4k too)"))] = None,
    width: Annotated[Optional[int], typer.Option("--width", show_default=False, help=FIELD["width"].option_help())] = None,
    height: Annotated[Optional[int], typer.Option(
        "--height", show_default=False, help=FIELD["height"].option_help())] = None,
    steps: opt.StepsOpt = None,
    seed: Annotated[Optional[int], typer.Option("--seed", show_default=False, help=FIELD["seed"].option_help())] = None,
    batch: Annotated[Optional[int], typer.Option(
        "--batch", "-n", show_default=False, help=FIELD["batch"].option_help())] = None,
    guidance: Annotated[Optional[float], typer.Option(
        "--guidance", show_default=False, help=FIELD["guidance"].option_help())] = None,
    input_image: Annotated[Optional[list[Path]], typer.Option(
        "--input-image", "-i", metavar="PATH", help="Reference image (PNG/JPEG/WebP); repeat for several.")] = None,
    strength: Annotated[Optional[float], typer.Option(
        "--strength", show_default=False, help=FIELD["strength"].option_help())] = None,
    mask: Annotated[Optional[Path], typer.Option(
        "--mask", metavar="PATH", show_default=False,
        help="Inpainting: a greyscale mask over the first --input-image, white = regenerate, black = keep "
             "(kept pixels come back exactly); strength then defaults to 1.")] = None,
    expand: Annotated[Optional[str], typer.Option(
        "--expand", metavar="L,T,R,B", show_default=False, help=FIELD["expand"].option_help())] = None,
    negative_prompt: Annotated[Optional[str], typer.Option(
        "--negative-prompt", metavar="TEXT", show_default=False, help=FIELD["negative_prompt"].option_help())] = None,
    output_dir: opt.OutputDirOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    no_preview: opt.NoPreviewOpt = False,
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
    server: Annotated[Optional[str], typer.Option(
        "--server", metavar="URL", show_default=False,
        help="Send the request to this running `flux2 serve` (it must run the same model); else FLUX2_SERVER, "
             "else the local default address when a server there runs the model.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Generate in this process even if a server runs the model.")
                     ] = False,
) -> None:
    """Generate images from one prompt and save them as PNG + .prompt files."""
    # Imported here, not at the top: `flux2 --help` and the other commands start without them.
    from flux2cli.console import ctrl_c_sets, format_timings, notice, previews_wanted, stderr, step_progress, thumbnail
    from flux2cli.pipeline.images import load_mask_file, load_reference_file
    from flux2cli.pipeline.metadata import plan_replay, read_parameters
    from flux2cli.pipeline.modifiers import parse_modifiers
    from flux2cli.pipeline.output import generation_body, prepare_output_dir
    from flux2cli.pipeline.registry import resolve_model
    from flux2cli.pipeline.request import GenerationRequest, normalize_size, parse_expand
    from flux2cli.settings import default_model
    from flux2cli.settings import output_dir as resolve_output_dir

    if prompt is None and from_image is None:
        raise InvalidRequest("give a prompt, or --from-image IMAGE.png to re-run an image's settings")
    parsed = parse_modifiers(prompt or "")
    settings = {"orientation": orientation and orientation.strip().lower(), "size": size and normalize_size(size),
                "width": width, "height": height, "steps": steps, "seed": seed, "batch": batch,
                "guidance": guidance, "negative_prompt": negative_prompt,
                "cache": cache and cache.strip().lower()}  # a request field, so a resident server runs it too
    settings.update(parsed.overrides)
    references = [load_reference_file(path) for path in input_image or ()]
    if expand is not None:
        settings["expand"] = parse_expand(expand)
    mask_image = load_mask_file(mask) if mask is not None else None
    notices: tuple[str, ...] = ()
    if from_image is not None:
        replay = plan_replay(read_parameters(from_image), settings, prompt=parsed.prompt, model=model,
                             full_model=full_model, gguf=gguf, references=len(references), strength=strength,
                             default_model=default_model())
        spec, text, settings, strength, notices = (replay.spec, replay.prompt, replay.settings, replay.strength,
                                                   replay.notices)
    else:
        spec, text = resolve_model(model, full_model=full_model, gguf=gguf, default=default_model()), parsed.prompt
    catalog, loras = opt.lora_catalog(lora, lora_dir)  # a bad --lora fails before the model loads
    stored_loras = settings.pop("loras", None)
    if stored_loras and not lora:  # replay: the image's LoRAs, those that are here
        from flux2cli.lora.replay import restore

        loras, missing = restore(stored_loras, catalog)
        notices = (*notices, *missing)
    request = GenerationRequest.create(text, model=spec, raw_input=prompt if parsed.prompt else text,
                                       reference_images=references, strength=strength, loras=loras, mask=mask_image,
                                       **settings)
    for message in (*notices, *request.notices):
        notice(message)
    output_dir = prepare_output_dir(resolve_output_dir(output_dir))  # fail now, not after generating
    preview = previews_wanted(stderr, False if no_preview else None)

    loading = {"--local-encoder": local_encoder, "--remote-encoder": remote_encoder, "--compile": compile,
               "--offload": offload != "auto", "--vae-tiling": vae_tiling != "auto", "--decoder": decoder != "full",
               "--lora": bool(loras) or lora_fuse or lora_partial}
    resident = _resident_server(spec, server, local, [flag for flag, given in loading.items() if given], notice)
    # Ctrl-C ends the run as GenerationCancelled, at the step it reached: one line, exit 130.
    reached = 0

    def counted(on_step):
        def step(event) -> None:
            nonlocal reached
            reached = event.step
            on_step(event)
        return step

    try:
        if resident is not None:  # a resident model: no torch in this process, no loading
            from flux2cli.client import delegate

            with step_progress(f"{request.width}x{request.height}", request.steps) as on_step:
                saved, elapsed = delegate.generate(resident, request, output_dir, on_step=counted(on_step))
        else:
            engine = opt.load_engine(spec, local_encoder=local_encoder, remote_encoder=remote_encoder,
                                     compile=compile, offload=offload, vae_tiling=vae_tiling, decoder=decoder)
            opt.use_loras(engine, catalog, loras, fuse=lora_fuse, partial=lora_partial)
            start = time.perf_counter()
            cancel = threading.Event()  # the engine stops at the end of the step it is in
            with step_progress(f"{request.width}x{request.height}", request.steps, preview=preview) as on_step, \
                    ctrl_c_sets(cancel):
                saved = engine.generate_and_save(request, output_dir, on_step=on_step, cancel=cancel)
            elapsed = time.perf_counter() - start
    except KeyboardInterrupt:  # while loading, or the delegate's wait (it cancelled the job on the server)
        raise GenerationCancelled(reached, request.steps) from None

    if json_output:
        body = generation_body(saved, elapsed)
        for entry, s in zip(body["images"], saved):
            entry["path"] = str(s.path.resolve())
        typer.echo(json.dumps(body))
        return
    for s in saved:
        typer.echo(f"{s.path}  seed {s.seed}  ({format_timings(s.timings)})")
    if preview and saved:
        thumbnail(stderr, saved[0].path)


def _resident_server(spec, flag: str | None, local: bool, loading: list[str], notify):
    """The running server to send the request to, or None to generate in this process."""
    from flux2cli.client import delegate
    from flux2cli.settings import resolve

    if local and flag is not None:
        raise InvalidRequest("--local and --server exclude each other; pick one")
    if flag is not None and loading:
        raise InvalidRequest(f"{loading[0]} shapes loading the model in this process; the server at --server "
                             "has loaded its own (drop one of them)")
    if local or loading:
        return None
    return delegate.choose(spec, flag=flag, setting=resolve("server"), port=resolve("port"),
                           api_key=resolve("api_key"), notify=notify)
