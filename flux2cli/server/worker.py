"""The one generation worker: a bounded queue of jobs, run as the engine's slots allow.

Every generation the server makes goes through ``GenerationWorker``: the synchronous
``POST /generate`` (which refuses to wait behind anything, as the spec says) and the
queued ``POST /jobs``. All bookkeeping happens on the event loop; only the engine calls
run in the worker threads, whose step callbacks hop back onto the loop with
``call_soon_threadsafe``. So ``/status`` reads plain attributes and never waits on a lock.

The engine is the backend: the in-process ``Engine`` runs one generation at a time (one
thread); an engine with ``slots`` = N (``flux2cli.scale``'s, generating on N Ray Serve
replicas) gets N threads, and ``/status`` then adds what runs where.

The queue is bounded twice: by the number of waiting jobs and by the decoded pixels of
the reference images they hold (a 70 KB PNG can decode to 50 MB), so a full queue costs
a known amount of memory whatever the uploads.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from flux2cli.errors import Busy, Flux2Error, GenerationCancelled, GenerationError
from flux2cli.pipeline.events import StepEvent
from flux2cli.pipeline.preview import preview_data_url
from flux2cli.pipeline.output import generation_body
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.pipeline.request import GenerationRequest

log = logging.getLogger("flux2cli.server")



class JobState(str, enum.Enum):
    """A job's state; a str, so JSON bodies, events and messages carry the plain names
    (enum.StrEnum would do the same but needs Python 3.11)."""

    __str__ = str.__str__

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


QUEUED, RUNNING, DONE, ERROR, CANCELLED = JobState
FINISHED_STATES = frozenset({DONE, ERROR, CANCELLED})
DEFAULT_QUEUE_SIZE = 8
MAX_QUEUE_SIZE = 100
# Decoded reference pixels that waiting jobs may hold together: two jobs with four
# references of the largest size (5376x3072 each), about 400 MB as RGB.
DEFAULT_REFERENCE_PIXEL_BUDGET = 2 * 4 * 5376 * 3072
KEEP_FINISHED_JOBS = 64  # finished jobs stay readable through GET /jobs/{id} for a while
DEFAULT_SECONDS_PER_STEP = 1.0  # until the first generation has been timed
DEFAULT_PREVIEW_EVERY = 0.25  # seconds: at most ~4 previews a second (and one a step)


class GenerationEngine(Protocol):
    """What the server needs from ``flux2cli.pipeline.engine.Engine`` (fakes implement it too).

    Optionally ``slots`` (generations it runs at once; 1 when absent) and
    ``replica_counts()`` (a dict that /status and /model-info add as ``replicas``)."""

    spec: ModelSpec

    def describe(self) -> dict[str, str]: ...

    def generate_and_save(self, request: GenerationRequest, output_dir: Path, *,
                          on_step: Callable[[StepEvent], None] | None = None,
                          cancel: threading.Event | None = None) -> list[Any]: ...


def _shutting_down() -> Busy:
    return Busy("the server is shutting down; try again once it is back")


def _running(job: Job) -> dict[str, Any]:
    """/status's fields about one running job."""
    return {"prompt": job.request.prompt, "batch": job.request.image_count, "current": max(job.current, 1),
            "step": job.step, "total_steps": job.total_steps}


@dataclass(eq=False)
class Job:
    """One generation and everything a client may ask about it."""

    request: GenerationRequest
    kind: str  # "generate" (POST /generate) or "job" (POST /jobs)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = QUEUED
    position: int | None = None  # 1 = next to run, while queued
    step: int = 0
    total_steps: int = 0
    current: int = 0  # 1-based image of the batch being generated
    result: dict[str, Any] | None = None  # the spec's success body, once done
    error: Flux2Error | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list[dict[str, Any]] = field(default_factory=list)  # id, event, data
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    previews: bool = False  # send preview events (POST /jobs asked, the server draws them)
    latest_preview: dict[str, Any] | None = None
    _images_done: int = 0
    _pass_batch: int = 0

    def __post_init__(self) -> None:
        self.total_steps = self.request.steps

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def reference_pixels(self) -> int:
        """Decoded pixels its reference images hold (what the queue's budget counts)."""
        return sum(ref.image.width * ref.image.height for ref in self.request.reference_images)

    def publish(self, event: str, data: dict[str, Any]) -> None:
        """Record an event and wake every listener (event-loop thread only)."""
        self.events.append({"id": len(self.events) + 1, "event": event, "data": data})
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_event(self, after: int, timeout: float | None = None) -> bool:
        """Wait until there are more than ``after`` events; False on timeout."""
        if len(self.events) > after or self.is_finished:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def wait_finished(self, poll: float) -> bool:
        """Wait up to ``poll`` seconds for the job to finish; True once it has."""
        deadline = time.monotonic() + poll
        while not self.is_finished:
            left = deadline - time.monotonic()
            if left <= 0 or not await self.wait_for_event(len(self.events), left):
                return False
        return True

    def progress(self) -> dict[str, int]:
        return {"step": self.step, "total_steps": self.total_steps,
                "current": self.current, "batch": self.request.image_count}

    def on_step(self, event: StepEvent) -> None:
        """A step finished in the worker thread (called on the loop thread)."""
        if self.state != RUNNING:
            return
        if event.step <= self.step and self._pass_batch:
            # The step counter started again: the previous pass's images are done.
            self._images_done += self._pass_batch
        self._pass_batch = event.batch
        self.step, self.total_steps = event.step, event.total_steps
        self.current = min(self.request.image_count, self._images_done + 1)
        self.publish("step", self.progress())

    def on_preview(self, step: int, total_steps: int, image: str) -> None:
        """A preview drawn in the worker thread (called on the loop thread). Only the newest
        keeps its image in the event history: replays and GET /jobs need no older frames."""
        if self.state != RUNNING:
            return
        self.drop_preview()
        self.latest_preview = {"step": step, "total_steps": total_steps, "image": image}
        self.publish("preview", self.latest_preview)

    def drop_preview(self) -> None:
        """Forget the newest preview's image (events already sent keep what they sent)."""
        if self.latest_preview is None:
            return
        for event in reversed(self.events):
            if event["event"] == "preview":
                event["data"] = {**event["data"], "image": None}
                break
        self.latest_preview = None

    def snapshot(self) -> dict[str, Any]:
        """The body of GET /jobs/{id}."""
        return {
            "success": True,
            "id": self.id,
            "state": self.state,
            "position": self.position,
            "prompt": self.request.prompt,
            "progress": self.progress(),
            "preview": self.latest_preview if not self.is_finished else None,
            "cancel_requested": self.cancel.is_set(),
            "result": self.result,
            "error": str(self.error) if self.error is not None else None,
            "status": self.error.http_status if self.error is not None else None,
        }


class GenerationWorker:
    """As many generations at once as the engine has slots; at most ``queue_size`` jobs waiting."""

    def __init__(self, engine: GenerationEngine, output_dir: Path, *,
                 queue_size: int = DEFAULT_QUEUE_SIZE, keep_finished: int = KEEP_FINISHED_JOBS,
                 reference_pixel_budget: int = DEFAULT_REFERENCE_PIXEL_BUDGET,
                 preview_every: float | None = DEFAULT_PREVIEW_EVERY):
        if not 1 <= queue_size <= MAX_QUEUE_SIZE:
            raise ValueError(f"queue_size must be from 1 to {MAX_QUEUE_SIZE}")
        self.engine = engine
        self.output_dir = Path(output_dir)
        self.queue_size = queue_size
        self.reference_pixel_budget = reference_pixel_budget
        self.keep_finished = keep_finished
        self.preview_every = preview_every  # seconds between previews of a job; None: no previews
        self.written: set[str] = set()  # file names this server saved; GET /images serves only these
        self.history: deque[Job] = deque(maxlen=32)  # finished jobs of both kinds, newest last
        self.slots = getattr(engine, "slots", 1)
        self.active: list[Job] = []  # running jobs, oldest first
        self._waiting: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # POST /jobs jobs, by id
        self._closing = False
        self._seconds_per_step = DEFAULT_SECONDS_PER_STEP
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._executions: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        # One worker thread per slot: in process, generations share one model and one
        # device, so they run one at a time. The threads are not daemons; a generation asked
        # to stop (shutdown sets every cancel event) ends at its next step, which exit waits for.
        self._executor = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="flux2-generation")
        self._task = asyncio.create_task(self._run(), name="flux2-generation-worker")

    def begin_shutdown(self) -> None:
        """Refuse new work and cancel what is queued or running (idempotent)."""
        if self._closing:
            return
        self._closing = True
        while self._waiting:
            self._finish(self._waiting.popleft(), error=_shutting_down())
        for job in self.active:
            job.cancel.set()
        self._wakeup.set()

    async def stop(self, timeout: float = 30.0) -> None:
        """Cancel everything and wait (up to ``timeout``) for the thread to let go."""
        self.begin_shutdown()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                log.warning("the running generation did not stop within %.0f s; leaving it behind", timeout)
                self._task.cancel()
                for execution in list(self._executions):
                    execution.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- submitting and cancelling --------------------------------------------------

    @property
    def running(self) -> Job | None:
        """The oldest running job (the one /status describes), if any."""
        return self.active[0] if self.active else None

    @property
    def busy(self) -> bool:
        """Every slot that can generate now is taken, or about to be by the jobs waiting (a
        replica being restarted counts as no slot here; queued jobs may still wait for it)."""
        replicas = self.replicas()
        ready = self.slots if replicas is None else min(self.slots, replicas["ready"])
        return len(self.active) + len(self._waiting) >= max(ready, 1)

    def check_can_generate_now(self) -> None:
        """Raise ``Busy`` unless a synchronous generation could start right away."""
        if self._closing:
            raise _shutting_down()
        if self.busy:
            what = "another generation is in progress" if self.slots == 1 else f"all {self.slots} replicas are busy"
            raise Busy(f"{what}; retry after the Retry-After seconds or queue it with POST /jobs")

    def check_can_queue(self) -> None:
        """Raise ``Busy`` when the queue is full (or the server is shutting down)."""
        if self._closing:
            raise _shutting_down()
        if len(self._waiting) >= self.queue_size:
            raise Busy(f"the job queue is full ({self.queue_size} waiting); try again later")

    def check_reference_budget(self, job: Job) -> None:
        """Raise ``Busy`` when queuing ``job`` would put the waiting jobs' decoded reference
        images over the budget; one job alone always fits when nothing else waits."""
        pixels = job.reference_pixels
        if not pixels or not self._waiting:
            return
        held = sum(waiting.reference_pixels for waiting in self._waiting)
        if held + pixels > self.reference_pixel_budget:
            raise Busy(f"the queued jobs already hold {held / 1e6:.0f} megapixels of reference images; "
                       f"try again when the queue is shorter")

    def submit(self, request: GenerationRequest, *, exclusive: bool, previews: bool = False) -> Job:
        """Queue a generation. ``exclusive`` (POST /generate): only if nothing else is running.
        ``previews``: the job's event stream carries previews (when the server draws them)."""
        if exclusive:
            self.check_can_generate_now()
        else:
            self.check_can_queue()
        job = Job(request=request, kind="generate" if exclusive else "job",
                  previews=previews and self.preview_every is not None)
        self.check_reference_budget(job)
        if not exclusive:
            self._jobs[job.id] = job
        self._waiting.append(job)
        job.position = len(self._waiting)
        job.publish(QUEUED, {"state": QUEUED, "position": job.position})
        self._wakeup.set()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job: Job) -> None:
        """Cancel one job: at once while queued, at its next step while running."""
        if job.is_finished:
            return
        job.cancel.set()
        if job.state == QUEUED:
            self._waiting.remove(job)
            self._finish(job, error=GenerationCancelled(0, job.total_steps))
            self._renumber()
        # A running job notices the event in the engine's step callback.

    # -- what /status and Retry-After report --------------------------------------

    def status(self) -> dict[str, Any]:
        """The spec's fields about the oldest running job; with replicas, every running job too."""
        job = self.running
        if job is None:
            body = {"generating": False, "prompt": None, "batch": 0, "current": 0,
                    "step": 0, "total_steps": 0, "queued": len(self._waiting)}
        else:
            body = {"generating": True, **_running(job), "queued": len(self._waiting)}
        replicas = self.replicas()
        if replicas is not None:
            body["running"] = [_running(job) for job in self.active]
            body["replicas"] = replicas
        return body

    def replicas(self) -> dict[str, Any] | None:
        """Ready and total replicas of an engine that has them; None in process."""
        counts = getattr(self.engine, "replica_counts", None)
        return counts() if counts is not None else None

    def retry_after(self) -> int:
        """Whole seconds until a slot is likely free: what 503s put in Retry-After."""
        seconds = sum(max(job.total_steps - job.step, 1) for job in self.active) * self._seconds_per_step
        seconds += sum(job.total_steps * self._seconds_per_step for job in self._waiting)
        return max(1, min(3600, math.ceil(seconds / self.slots)))

    # -- the loop side of the worker ------------------------------------------------

    async def _run(self) -> None:
        while True:
            while (not self._waiting or len(self.active) >= self.slots) and not self._closing:
                self._wakeup.clear()
                await self._wakeup.wait()
            if not self._waiting:
                if self._executions:  # closing: the running jobs end at their next step
                    await asyncio.wait(set(self._executions))
                return
            job = self._waiting.popleft()
            self._renumber()
            self.active.append(job)
            execution = asyncio.create_task(self._execute(job), name=f"flux2-job-{job.id[:8]}")
            self._executions.add(execution)
            execution.add_done_callback(self._executions.discard)

    async def _execute(self, job: Job) -> None:
        job.state, job.position = RUNNING, None
        job.publish("started", {"state": RUNNING, "total_steps": job.total_steps, "batch": job.request.image_count})
        loop = asyncio.get_running_loop()

        last_preview = [float("-inf")]

        def on_step(event: StepEvent) -> None:  # worker thread
            loop.call_soon_threadsafe(job.on_step, event)
            # At most one preview a step and one every preview_every seconds; the last step's
            # is skipped, the image itself follows at once.
            now = time.monotonic()
            if (job.previews and event.preview is not None and event.step < event.total_steps
                    and now - last_preview[0] >= self.preview_every):
                last_preview[0] = now
                image = preview_data_url(event.preview())
                loop.call_soon_threadsafe(job.on_preview, event.step, event.total_steps, image)

        def work() -> tuple[list[Any], float]:  # worker thread
            start = time.perf_counter()
            saved = self.engine.generate_and_save(job.request, self.output_dir, on_step=on_step, cancel=job.cancel)
            return saved, time.perf_counter() - start

        try:
            if job.cancel.is_set():
                raise GenerationCancelled(0, job.total_steps)
            saved, elapsed = await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except GenerationCancelled as error:
            if self._closing:
                self._finish(job, error=_shutting_down())
            else:
                self._finish(job, error=error)
        except Flux2Error as error:
            self._finish(job, error=error)
        except asyncio.CancelledError:
            job.cancel.set()
            self._finish(job, error=_shutting_down())
            raise
        except Exception:
            log.exception("generation %s failed unexpectedly", job.id)
            self._finish(job, error=GenerationError("generation failed unexpectedly; the server log has details"))
        else:
            self.written.update(image.filename for image in saved)
            if job.step:
                self._seconds_per_step = elapsed / max(job.step, 1)
            self._finish(job, result=generation_body(saved, elapsed))
        finally:
            self.active.remove(job)
            self._wakeup.set()  # a slot is free

    def _finish(self, job: Job, *, result: dict[str, Any] | None = None,
                error: Flux2Error | None = None) -> None:
        job.position = None
        if job.request.reference_images:  # finished jobs are kept a while; their uploads need not be
            job.request = replace(job.request, reference_images=())
        job.drop_preview()  # nor their last preview: the image itself is there now
        if error is None:
            job.state, job.result = DONE, result
            job.publish(DONE, {"state": DONE, "result": result})
            count = len(result["images"])
            log.info("job %s: %d %s in %.2f s", job.id[:8], count, "image" if count == 1 else "images",
                     result["generation_time"])
        else:
            job.state = CANCELLED if isinstance(error, GenerationCancelled) else ERROR
            job.error = error
            job.publish("error", {"state": job.state, "error": str(error), "status": error.http_status})
            log.info("job %s: %s", job.id[:8], error)
        self.history.append(job)
        self._prune()

    def _renumber(self) -> None:
        for index, waiting in enumerate(self._waiting, start=1):
            if waiting.position != index:
                waiting.position = index
                waiting.publish(QUEUED, {"state": QUEUED, "position": index})

    def _prune(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.is_finished]
        for job_id in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job_id]
