"""The front door's engine when generation runs on Ray Serve replicas.

``ReplicatedEngine`` is what ``flux2cli.server`` needs of an engine (``GenerationEngine``)
plus ``slots`` (generations it runs at once: one per replica) and ``replica_counts()``.
Each generation is one streaming call to the generator deployment, made from one of the
server worker's threads: step events (with the previews the replica drew) come back as
they happen, the images last, as pixels, which this process writes into its own output
folder through ``save_images`` (atomically, as the in-process server does).

Faults: a replica that dies mid-job ends that job with a ``GenerationError`` saying so; the
job is not retried (a retry would repeat minutes of work behind the client's back and could
kill a second replica with the same request). Ray Serve replaces the replica; meanwhile
``replica_counts`` reports fewer ready ones. With no encoder replica running, generations
fail at once with 503 (``Busy``) until Ray Serve has brought one back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from flux2cli import errors
from flux2cli.errors import Busy, Flux2Error, GenerationCancelled, GenerationError
from flux2cli.pipeline.events import StepEvent
from flux2cli.pipeline.registry import ModelSpec

log = logging.getLogger("flux2cli.server")

GENERATOR, ENCODER = "Generator", "TextEncoder"  # the deployments' names (deployments.py)
POLL_SECONDS = 0.5  # how often replica counts are refreshed and cancel requests looked for


class ReplicatedEngine:
    """Generation on the generator deployment of Ray Serve application ``app``."""

    def __init__(self, spec: ModelSpec, app: str, *, replicas: int, encoder_replicas: int,
                 described: dict[str, str], preview_every: float | None):
        from ray import serve

        self.spec = spec
        self.app = app
        self.slots = replicas
        self.preview_every = preview_every
        self._described = dict(described)
        self._totals = {GENERATOR: replicas, ENCODER: encoder_replicas}
        self._ready = dict(self._totals)  # the deployment was running when this engine was made
        self._handle = serve.get_deployment_handle(GENERATOR, app).options(stream=True)
        self._streams: dict[int, tuple[threading.Event, Any]] = {}  # cancel event and stream, per call
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # One thread for both chores: Serve's status is a call to its controller (never made on
        # the server's event loop), and a stream blocked in next() cannot watch its cancel event.
        self._thread = threading.Thread(target=self._watch, name="flux2-ray-watch", daemon=True)
        self._thread.start()

    def describe(self) -> dict[str, str]:
        return dict(self._described)

    def replica_counts(self) -> dict[str, Any]:
        """What /status and /model-info add: ready and total generation replicas (and encoders)."""
        return {"ready": self._ready[GENERATOR], "total": self._totals[GENERATOR],
                "encoder": {"ready": self._ready[ENCODER], "total": self._totals[ENCODER]}}

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)

    # -- one generation ---------------------------------------------------------------

    def generate_and_save(self, request: Any, output_dir: Path, *,
                          on_step: Callable[[StepEvent], None] | None = None,
                          cancel: threading.Event | None = None) -> list[Any]:
        from flux2cli.pipeline.output import save_images

        if self._ready[ENCODER] == 0:
            raise Busy("the text-encoder deployment has no running replica (Ray Serve is restarting it); "
                       "try again shortly")
        cancel = cancel or threading.Event()
        stream = self._handle.generate.remote(request, self.preview_every)
        with self._lock:
            self._streams[id(stream)] = (cancel, stream)
        step, total = 0, request.steps
        try:
            for item in stream:
                if item[0] == "step":
                    _, step, total, batch, preview = item
                    if on_step is not None:
                        on_step(StepEvent(step, total, batch, preview=None if preview is None else (lambda: preview)))
                    if cancel.is_set():  # as the in-process engine: the job ends at this step
                        stream.cancel()
                        raise GenerationCancelled(step, total)
                elif item[0] == "error":
                    raise _rebuilt(item[1], item[2])
                else:
                    _, images, loras, cache = item
                    break
            else:
                raise GenerationError("the generation replica ended the stream without images; "
                                      "the server log has details")
        except Flux2Error:
            raise
        except Exception as error:
            if cancel.is_set():
                raise GenerationCancelled(step, total) from None
            raise _ray_failure(error) from None
        finally:
            with self._lock:
                self._streams.pop(id(stream), None)
        results = [_Generated(_image(pixels), seed, timings, evaluations)
                   for pixels, seed, timings, evaluations in images]
        recorded = replace(request, loras=loras, cache=cache)
        return save_images(results, recorded, output_dir=output_dir, model_name=self.spec.display_name)

    # -- the watcher thread -------------------------------------------------------------

    def _watch(self) -> None:
        cancelled: set[int] = set()
        while not self._closed.wait(POLL_SECONDS):
            with self._lock:
                streams = dict(self._streams)
            for key, (cancel, stream) in streams.items():
                if cancel.is_set() and key not in cancelled:
                    cancelled.add(key)  # waiting for a replica, or encoding: no step event to notice it at
                    stream.cancel()
            cancelled &= set(streams)
            self._refresh_counts()

    def _refresh_counts(self) -> None:
        from ray import serve

        try:
            application = serve.status().applications.get(self.app)
        except Exception as error:  # noqa: BLE001 - the controller restarting; keep the last counts
            log.debug("serve.status() failed: %s", error)
            return
        for name in (GENERATOR, ENCODER):
            deployment = application.deployments.get(name) if application is not None else None
            self._ready[name] = deployment.replica_states.get("RUNNING", 0) if deployment is not None else 0


class _Generated:
    """What ``save_images`` reads of each image (the engine's ``GeneratedImage``)."""

    def __init__(self, image: Any, seed: int, timings: dict[str, float], evaluations: dict[str, Any] | None):
        self.image, self.seed, self.timings, self.evaluations = image, seed, timings, evaluations


def _image(pixels: Any) -> Any:
    from PIL import Image

    return Image.fromarray(pixels)


def _rebuilt(name: str, message: str) -> Flux2Error:
    """The replica's ``Flux2Error``, by class name (a cancellation is never the replica's to report)."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Flux2Error)) or issubclass(cls, GenerationCancelled):
        return GenerationError(message)
    return cls(message)


def _ray_failure(error: BaseException) -> Flux2Error:
    """One line for what Ray raised while a generation ran (its details go to the log)."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    if isinstance(error, (ray_errors.RayActorError, ray_errors.ActorUnavailableError,
                          serve_errors.ReplicaUnavailableError)):
        return GenerationError("the replica running this generation stopped (its process ended); the job was "
                               "not retried: submit it again")
    if isinstance(error, serve_errors.DeploymentUnavailableError):
        return Busy("the generation deployment is unavailable; try again shortly")
    log.error("generation on Ray Serve failed: %s", error)
    return GenerationError("generation failed on its replica; the server log has details")
