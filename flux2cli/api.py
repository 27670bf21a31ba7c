"""The spec's Python API: ``load_model()`` then ``generate_image()``.

Kept call-compatible with the reference (``from fl24bit import load_model,
generate_image``); ``model=`` additionally names any registry entry.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.events import StepEvent
from flux2cli.pipeline.fields import DEFAULT_STRENGTH
from flux2cli.pipeline.images import check_pil_image, load_reference_file
from flux2cli.pipeline.loading import LoadOptions
from flux2cli.pipeline.registry import resolve_model
from flux2cli.pipeline.request import GenerationRequest

_engine: Any = None
_engine_lock = threading.Lock()


def load_model(
    local_encoder: bool = False,
    full_model: bool = False,
    gguf_quant: str | None = None,
    *,
    model: str | None = None,
    compile: bool = False,
    device: str | None = None,
    remote_encoder: str | None = None,
    offload: str = "auto",
    vae_tiling: str = "auto",
    decoder: str = "full",
):
    """Load a model once for ``generate_image``; returns the engine for direct use.

    ``gguf_quant`` is ``"bf16"``, ``"q8"``, ``"q4"`` or a local ``.gguf`` file;
    ``remote_encoder`` a URL speaking the remote-encoder protocol; ``offload`` one of
    auto/none/model/sequential; ``vae_tiling`` one of auto/on/off. Notes about the choices
    made (encoder fallback, offloading) are in ``engine.load_notices``.
    """
    from flux2cli.pipeline.engine import Engine

    global _engine
    from flux2cli.settings import default_model

    spec = resolve_model(model, full_model=full_model, gguf=gguf_quant, default=default_model())
    options = load_options(device=device, local_encoder=local_encoder, remote_encoder=remote_encoder,
                           compile=compile, offload=offload, vae_tiling=vae_tiling, decoder=decoder)
    with _engine_lock:
        _engine = Engine.load(spec, options)
        return _engine


def load_options(*, device: str | None = None, local_encoder: bool = False, remote_encoder: str | None = None,
                 compile: bool = False, offload: str = "auto", vae_tiling: str = "auto", decoder: str = "full",
                 notify: Callable[[str], None] | None = None) -> LoadOptions:
    """``LoadOptions`` from the caller's choices plus the settings that loading needs, checked.

    The one place where the front ends (commands, REPL, server, this API) turn settings
    into loading options: the pipeline layer reads none itself.
    """
    from flux2cli import settings

    return LoadOptions(device=device, local_encoder=local_encoder, remote_encoder=remote_encoder,
                       compile=compile, offload=offload, vae_tiling=vae_tiling, decoder=decoder, notify=notify,
                       encoder_url=settings.resolve("encoder_url"),
                       encoder_token=settings.resolve("encoder_token"),
                       hub_cache=settings.hf_hub_cache()).validate()


def generate_image(
    prompt: str,
    seed: int | None = None,
    steps: int | None = None,
    width: int | None = None,
    height: int | None = None,
    local_encoder: bool = False,
    input_image: Any = None,
    strength: float | None = None,
    *,
    on_preview: Callable[[Any], None] | None = None,
):
    """Generate one image; returns ``(PIL.Image, seed, timings)``.

    ``steps``, ``width`` and ``height`` default to the loaded model's own defaults
    (25 steps at 1344x768 for FLUX.2 [dev], exactly as the reference). The model is
    loaded on first use if ``load_model`` was not called. ``input_image`` is a PIL image
    or a path; ``strength`` (0.75 with an image) needs one, as on the command line, except
    that the reference's own example call (``input_image=None, strength=0.75``) works.
    ``on_preview`` receives a small PIL preview of the image as it forms, after each step.
    """
    from pathlib import Path

    engine = _engine or load_model(local_encoder=local_encoder)
    if input_image is None:
        references = ()
        if strength is not None and strength != DEFAULT_STRENGTH:
            raise InvalidRequest("strength needs an input_image; pass one or drop strength", field="strength")
        strength = None
    elif isinstance(input_image, (str, Path)):
        references = (load_reference_file(input_image),)
    else:
        references = (check_pil_image(input_image),)
    request = GenerationRequest.create(prompt, model=engine.spec, steps=steps, seed=seed, width=width,
                                       height=height, reference_images=references, strength=strength)

    def on_step(event: StepEvent) -> None:
        if event.preview is not None:
            on_preview(event.preview())

    result = engine.generate(request, on_step=on_step if on_preview is not None else None)[0]
    return result.image, result.seed, result.timings
