"""The engine: one loaded pipeline, generating validated requests.

It knows nothing of Typer, prompt_toolkit or aiohttp; those layers hand it a
``GenerationRequest`` and receive images, seeds and timings back.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flux2cli.encoder.cache import CachedEncoder, EmbeddingKey
from flux2cli.encoder.local import LocalTextEncoder
from flux2cli.errors import (
    Flux2Error,
    GenerationCancelled,
    GenerationError,
    OutOfMemory,
)
from flux2cli.lora.adapters import LoraAdapters
from flux2cli.pipeline.events import StepCallback, StepEvent
from flux2cli.pipeline.img2img import fit_reference, sdedit_start
from flux2cli.pipeline.inpaint import MaskedEdit
from flux2cli.pipeline.loading import LoadOptions, load_model_parts
from flux2cli.pipeline.output import SavedImage, save_images
from flux2cli.pipeline.preview import LinearMap, Previewer
from flux2cli.pipeline.registry import ModelSpec, get_model
from flux2cli.pipeline.request import GenerationRequest


@dataclass(frozen=True)
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int
    # Per image; a batch shares one encoding and one pipeline call, so each image
    # carries its share of both and the shares add up to the batch's wall time.
    timings: dict[str, float]
    # Step caching's report: full transformer evaluations of the calls (step_cache.Counter.report).
    evaluations: dict[str, Any] | None = None


class Engine:
    def __init__(self, spec: ModelSpec, pipe: Any, device: str, encoder: Any | None = None):
        self.spec = spec
        self.pipe = pipe
        self.device = device
        self.encoder = CachedEncoder(encoder or LocalTextEncoder(pipe))
        self.load_notices: tuple[str, ...] = ()  # one-line notes from loading (encoder, offload)
        self._lock = threading.Lock()
        self.loras = LoraAdapters(pipe, spec.display_name)  # front ends configure it (catalog, --lora)
        self.previewer = Previewer(pipe, LinearMap.read(spec.local_dir))
        self.default_cache = "off"  # a front end's --cache; a request's cache field overrides it

    @classmethod
    def load(cls, model: ModelSpec | str, options: LoadOptions | None = None) -> Engine:
        spec = model if isinstance(model, ModelSpec) else get_model(model)
        # loading picks the text encoder (local or remote) and says why in its notices.
        loaded = load_model_parts(spec, options or LoadOptions())
        engine = cls(spec, loaded.pipe, loaded.device, encoder=loaded.encoder)
        engine.load_notices = loaded.notices
        return engine

    def describe(self) -> dict[str, str]:
        """What /model-info reports: the model really loaded and its encoder."""
        encoder = self.encoder.encoder.name
        return {
            "model": self.spec.display_name,
            "encoder": encoder,
            "description": f"{self.spec.display_name} with {encoder}",
        }

    def embedding_key(self, prompt: str) -> EmbeddingKey:
        return EmbeddingKey(self.spec.name, prompt, self.spec.max_sequence_length,
                            self.spec.text_encoder_out_layers)

    def is_cached(self, prompt: str) -> bool:
        return self.embedding_key(prompt) in self.encoder

    def generate(
        self,
        request: GenerationRequest,
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GeneratedImage]:
        """Generate ``request.batch`` images of each of the request's prompts (one, unless it has
        alternatives), one pipeline call each; the images come in the order of ``request.seeds``."""
        if request.model != self.spec.name:
            raise GenerationError(f"this engine runs {self.spec.name}, not {request.model}")
        with self._lock:
            images: list[GeneratedImage] = []
            try:
                for variant in request.variants():
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled(0, variant.steps)
                    images += self._generate(variant, on_step, cancel)
            except Flux2Error:
                raise
            except Exception as error:
                raise _generation_error(error) from error
            return images

    def generate_and_save(
        self,
        request: GenerationRequest,
        output_dir: Path,
        *,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[SavedImage]:
        results = self.generate(request, on_step=on_step, cancel=cancel)
        return save_images(results, self.recorded(request), output_dir=output_dir, model_name=self.spec.display_name)

    def recorded(self, request: GenerationRequest) -> GenerationRequest:
        """The request as its images record it: the LoRAs used, with their sha256, and the
        step caching that ran (none recorded when none ran)."""
        request = self.loras.stamp(request)
        mode = self.cache_mode(request)
        return replace(request, cache=None if mode == "off" else mode)

    def cache_mode(self, request: GenerationRequest) -> str:
        return request.cache or self.default_cache

    def _generate(self, request, on_step, cancel) -> list[GeneratedImage]:
        import torch

        from flux2cli.pipeline.step_cache import step_cache

        self.loras.apply(request.loras)  # loads each LoRA once; switching sets never reloads the model
        embeds, encoding = self.encoder.encode(self.embedding_key(request.prompt))
        kwargs: dict[str, Any] = {}
        if self.spec.pipeline_class == "Flux2KleinPipeline":
            # Distilled klein refuses guidance > 1; undistilled klein runs CFG against the
            # negative prompt ("" unless given), cached like any prompt.
            kwargs["guidance_scale"] = 1.0 if request.guidance is None else request.guidance
            if kwargs["guidance_scale"] > 1 and not self.pipe.config.is_distilled:
                negative = self.embedding_key(request.negative_prompt or "")
                kwargs["negative_prompt_embeds"], more = self.encoder.encode(negative)
                encoding += more
        elif self.spec.pipeline_class == "Flux2Pipeline":  # Flux2KleinKVPipeline takes no guidance
            kwargs["guidance_scale"] = request.guidance

        previous: list[Any] = [None]  # the latents one step before, for the preview's x0 estimate
        edit: MaskedEdit | None = None  # a mask or expand: inpaint.py says why this hook and not a pipeline
        width, height = request.width, request.height  # what the pipeline draws (a masked edit's canvas)

        def step_end(pipe, index, timestep, callback_kwargs):
            latents = callback_kwargs.get("latents")
            if edit is not None and latents is not None:  # the kept region back at this step's noise level
                latents = callback_kwargs["latents"] = edit.blend(latents, index)
            if on_step is not None:
                sigmas = self.previewer.sigmas()
                before = previous[0]
                preview = None if latents is None or before is None else (lambda: self.previewer.render(
                    latents, height, width, previous=before, sigmas=sigmas))
                on_step(StepEvent(index + 1, steps_run, request.batch, preview=preview))
            previous[0] = latents
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(index + 1, steps_run)
            return callback_kwargs

        # CPU generators give the same noise on every device, so a seed means one image.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
        steps_run = request.steps
        start = time.perf_counter()
        mode = self.cache_mode(request)
        with torch.inference_mode(), step_cache(self.pipe.transformer, mode) as counter:
            if request.reference_images:
                # References larger than the model's native 1 MP only cost time and memory.
                max_pixels = math.prod(self.spec.dimensions("square", "1mp"))
                references = [fit_reference(ref.image, max_pixels) for ref in request.reference_images]
                kwargs["image"] = references
                if request.mask is not None or request.expand is not None:
                    edit = MaskedEdit(self.pipe, request, generators)
                    # As in diffusers' inpaint pipeline, the edited image is the start, not a
                    # reference: given as one, models copy it into the masked area too.
                    kwargs.update(edit.kwargs, image=references[1:] or None)
                    steps_run, width, height = edit.steps_run, edit.width, edit.height
                elif request.strength < 1.0:
                    sdedit = sdedit_start(self.pipe, references[0], width=request.width,
                                          height=request.height, steps=request.steps,
                                          strength=request.strength, generators=generators)
                    kwargs.update(latents=sdedit.latents, sigmas=sdedit.sigmas)
                    steps_run = sdedit.steps_run
            output = self.pipe(
                prompt_embeds=embeds,
                height=height,
                width=width,
                num_inference_steps=request.steps,
                num_images_per_prompt=request.batch,
                generator=generators,
                callback_on_step_end=step_end,
                output_type="pil",
                **kwargs,
            )
        diffusion = time.perf_counter() - start
        share = {"encoding": encoding / request.batch, "diffusion": diffusion / request.batch}
        share["total"] = share["encoding"] + share["diffusion"]
        evaluations = counter.report(mode, steps_run)
        return [GeneratedImage(image, seed, dict(share), dict(evaluations))
                for image, seed in zip(output.images if edit is None else edit.finish(output.images),
                                       request.seeds)]


def _generation_error(error: Exception) -> Flux2Error:
    name = type(error).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return OutOfMemory("the device ran out of memory; try a smaller size or batch, or a quantized model")
    return GenerationError(f"generation failed ({name}); run with FLUX2_DEBUG=1 for details")
