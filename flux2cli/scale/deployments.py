"""The two Ray Serve deployments: a model's text encoder, and its transformer + VAE.

``TextEncoderDeployment`` loads only the text encoder and tokenizer and answers prompt
embeddings (CPU tensors: they travel through Ray's object store to whichever host asks).
``GeneratorDeployment`` loads the pipeline without a text encoder; its encoder is a
``DeploymentEncoder`` that asks the encoder deployment. One generation per replica at a
time (``max_ongoing_requests=1``): a replica holds one model on one device.

A generation streams back plain tuples (picklable without flux2cli's classes on the
caller's side being special):

* ``("step", step, total_steps, batch, preview)``: preview is a small PIL image or None;
* ``("images", [(pixels, seed, timings, evaluations), ...], loras, cache)``: pixels are
  uint8 arrays; ``loras`` and ``cache`` are what the images record (``Engine.recorded``);
* ``("error", class_name, message)``: a ``Flux2Error`` of the engine, by name, so the
  caller rebuilds it without unpickling an exception (whose constructor may differ).

The images are written by the caller (the front door), so replicas need no shared disk.
Cancellation: when the caller cancels the stream, Ray Serve cancels this async generator
(``asyncio.CancelledError`` at its ``await``); its ``finally`` sets the engine's cancel
event, which the engine honours at the end of the current step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, AsyncIterator

from ray import serve

from flux2cli.encoder.cache import EmbeddingKey
from flux2cli.errors import Busy, Flux2Error
from flux2cli.pipeline.events import StepEvent

ENCODE_TIMEOUT = 120.0  # seconds a generator waits for the encoder deployment (a cold [dev] encode takes ~10)
_DONE = object()


def load_options(options: dict[str, Any], **extra: Any) -> Any:
    """``LoadOptions`` from the plain dict a deployment is bound with (keys are its fields)."""
    from flux2cli.pipeline.loading import LoadOptions

    return LoadOptions(**options, **extra)


# A constructor that fails (weights missing, out of memory) fails the same way again: three
# tries, then the deployment fails and `flux2 serve` says why, instead of Serve retrying on.
@serve.deployment(name="TextEncoder", max_ongoing_requests=8, health_check_period_s=2, max_constructor_retry_count=3)
class TextEncoderDeployment:
    """Prompt embeddings for one model (``model`` is a registry name)."""

    def __init__(self, model: str, options: dict[str, Any] | None = None):
        from flux2cli.encoder.cache import CachedEncoder
        from flux2cli.pipeline.loading import load_text_encoder
        from flux2cli.pipeline.registry import get_model

        self._encoder = CachedEncoder(load_text_encoder(get_model(model), load_options(options or {})))
        self._lock = threading.Lock()  # one encode at a time: a text encoder is one model on one device

    def encode(self, key: EmbeddingKey) -> Any:
        with self._lock:
            embeds, _seconds = self._encoder.encode(key)
        return embeds.detach().to("cpu")  # a CUDA tensor would need the same device wherever it lands


class DeploymentEncoder:
    """The ``TextEncoder`` of a generation replica: asks the encoder deployment."""

    name = "Ray Serve encoder"

    def __init__(self, handle: Any, timeout: float = ENCODE_TIMEOUT):
        self._handle = handle
        self._timeout = timeout
        self.device: Any = None  # the transformer's device and dtype, set once the pipeline is loaded
        self.dtype: Any = None

    def encode(self, key: EmbeddingKey) -> Any:
        from ray import exceptions as ray_errors

        try:
            embeds = self._handle.encode.remote(key).result(timeout_s=self._timeout)
        except TimeoutError:
            raise Busy(f"the text-encoder deployment did not answer within {self._timeout:g} s; "
                       "try again shortly") from None
        except (ray_errors.RayActorError, serve.exceptions.DeploymentUnavailableError,
                serve.exceptions.ReplicaUnavailableError):
            raise Busy("the text-encoder deployment is unavailable (its replica stopped and Ray Serve is "
                       "restarting it); try again shortly") from None
        except ray_errors.RayTaskError as error:
            cause = error.cause
            if isinstance(cause, Flux2Error):
                raise type(cause)(str(cause)) from None
            raise
        return embeds.to(device=self.device, dtype=self.dtype)


@serve.deployment(name="Generator", max_ongoing_requests=1, health_check_period_s=2, max_constructor_retry_count=3)
class GeneratorDeployment:
    """Transformer + VAE of one model; text encoding through ``encoder`` (a deployment handle)."""

    def __init__(self, model: str, encoder: Any, options: dict[str, Any] | None = None,
                 default_cache: str | None = None):
        from flux2cli.pipeline.engine import Engine
        from flux2cli.pipeline.registry import get_model

        client = DeploymentEncoder(encoder)
        self.engine = Engine.load(get_model(model), load_options(options or {}, text_encoder=client))
        transformer = self.engine.pipe.transformer
        client.device, client.dtype = self.engine.pipe._execution_device, transformer.dtype
        if default_cache:
            self.engine.default_cache = default_cache

    def describe(self) -> dict[str, str]:
        return self.engine.describe()

    async def generate(self, request: Any, preview_every: float | None = None) -> AsyncIterator[tuple]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        last_preview = [float("-inf")]

        def on_step(event: StepEvent) -> None:  # the engine's thread
            preview = None
            now = time.monotonic()
            # At most one preview every preview_every seconds, none at the last step (the
            # image follows at once); the front door forwards them to jobs that asked.
            if (preview_every is not None and event.preview is not None and event.step < event.total_steps
                    and now - last_preview[0] >= preview_every):
                last_preview[0] = now
                preview = event.preview()
            loop.call_soon_threadsafe(events.put_nowait, ("step", event.step, event.total_steps, event.batch,
                                                          preview))

        def run() -> tuple:  # the engine's thread
            try:
                images = self.engine.generate(request, on_step=on_step, cancel=cancel)
            except Flux2Error as error:
                return ("error", type(error).__name__, str(error))
            finally:
                loop.call_soon_threadsafe(events.put_nowait, _DONE)
            recorded = self.engine.recorded(request)
            return ("images", [(_pixels(image.image), image.seed, image.timings, image.evaluations)
                               for image in images], recorded.loras, recorded.cache)

        work = loop.run_in_executor(None, run)
        try:
            while (item := await events.get()) is not _DONE:
                yield item
            yield await work
        finally:
            cancel.set()  # the caller went away (cancelled): the engine stops at the end of this step


def _pixels(image: Any) -> Any:
    import numpy

    return numpy.asarray(image)  # Image.fromarray gives the same image back, mode included
