"""Starting or joining Ray, putting the application up (or finding it), and leaving.

``RayCluster(address)`` is a context manager:

* without an address it starts a local Ray instance and ends it on exit, Serve's
  processes included (none is left behind);
* with one (``auto``, ``HOST:6379`` from a host that ran ``ray start --address``, or
  ``ray://HOST:10001``) it joins that cluster, and on exit deletes the application only
  if it deployed it;
* when this process is already connected (a notebook, a test session) it uses that
  connection and leaves it open.

``start(spec, args)`` uses the running application named ``flux2`` when there is one
(deployed by ``serve deploy`` or another front door) and deploys it from ``args``
otherwise; either way it waits, within a bound, for its replicas to be ready. Every
failure is a one-line ``ScaleError`` (exit status 1).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any
from urllib.parse import urlparse

from flux2cli.errors import Flux2Error
from flux2cli.scale.application import APP_NAME, build_app
from flux2cli.scale.replicated import ENCODER, GENERATOR, ReplicatedEngine

READY_TIMEOUT = 900.0  # seconds replicas may take to load (a cold hub download of a large model takes long)
CONNECT_TIMEOUT = 5.0
_POLL = 0.25


class ScaleError(Flux2Error):
    """Ray could not be reached, lacks the resources asked for, or the replicas did not come up."""


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail in one line when ``address`` does not accept connections: ``ray.init`` itself
    retries an unreachable cluster for minutes, printing warnings all along."""
    if address == "auto":
        return  # the local node's own record of its cluster; ray.init fails fast without one
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    except ValueError:
        raise ScaleError(f"--ray-address takes HOST:PORT, ray://HOST:PORT or auto (got {address!r})") from None
    if not host:
        raise ScaleError(f"--ray-address takes HOST:PORT, ray://HOST:PORT or auto (got {address!r})")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ScaleError(f"the Ray cluster at {host}:{port} cannot be reached ({reason}); "
                         "is `ray start --head` running there?") from None


class RayCluster:
    """See the module docstring."""

    def __init__(self, address: str | None = None, *, ready_timeout: float = READY_TIMEOUT):
        self.address = address
        self.ready_timeout = ready_timeout
        self.engine: ReplicatedEngine | None = None
        self._started_ray = False  # a local instance, ours to end
        self._owns_connection = False  # ray.init was ours (not a caller's, such as a test session's)
        self._deployed = False

    def __enter__(self) -> RayCluster:
        import ray

        quiet_ray_logs()
        if ray.is_initialized():  # the caller's connection (a notebook, a test session): used, kept
            return self
        if self.address is not None:
            check_reachable(self.address)
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except Exception as error:  # noqa: BLE001 - ray.init raises bare Exceptions too (a node that timed out)
            what = f"connect to the Ray cluster at {self.address}" if self.address else "start a local Ray instance"
            raise ScaleError(f"could not {what}: {_first_line(error)}") from None
        self._owns_connection = True
        self._started_ray = self.address is None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        import ray
        from ray import serve

        if self.engine is not None:
            self.engine.close()
            self.engine = None
        try:
            # A local instance goes whole: ray.shutdown() ends the processes it started, and the
            # replicas and Serve's controller with them. serve.shutdown() first would wait 30 s
            # for a controller whose raylet a group-wide SIGTERM (systemd, kill -TERM -PGID) ended.
            if self._deployed and not self._started_ray:
                serve.delete(APP_NAME)
        finally:
            self._deployed = False
            if self._owns_connection and ray.is_initialized():
                ray.shutdown()

    # -- the application ---------------------------------------------------------------

    def start(self, spec: Any, args: dict[str, Any], *, preview_every: float | None) -> ReplicatedEngine:
        """The front door's engine on a running ``flux2`` application (see the module docstring)."""
        from ray import serve

        serve.start(proxy_location="Disabled")  # the front door is flux2's own aiohttp server
        if _app_status(APP_NAME) is None:
            self.check_resources(args)
            # serve.run() would wait for the replicas without a bound; _run (Serve's own, marked
            # public) returns once the deployments exist, and _wait_ready bounds the rest.
            serve._run(build_app({**args, "model": spec.name}), _blocking=False, name=APP_NAME, route_prefix=None)
            self._deployed = True
        counts = self._wait_ready()
        described = serve.get_deployment_handle(GENERATOR, APP_NAME).describe.remote().result(timeout_s=60)
        if described["model"] != spec.display_name:
            raise ScaleError(f"the Ray cluster's flux2 application runs {described['model']}, not "
                             f"{spec.display_name}; pass --model to match, or `serve delete flux2` first")
        self.engine = ReplicatedEngine(spec, APP_NAME, replicas=counts[GENERATOR], encoder_replicas=counts[ENCODER],
                                       described=described, preview_every=preview_every)
        return self.engine

    def check_resources(self, args: dict[str, Any]) -> None:
        """One line when the cluster cannot hold the replicas asked for (Serve would wait forever)."""
        import ray

        replicas, encoders = int(args.get("replicas", 1)), int(args.get("encoder_replicas", 1))
        cpus, gpus = float(args.get("cpus_per_replica", 1)), float(args.get("gpus_per_replica", 0))
        have = ray.cluster_resources()
        need = {"CPU": replicas * cpus, "GPU": (replicas + encoders) * gpus}
        short = [f"{amount:g} {name}s (the cluster has {have.get(name, 0):g})"
                 for name, amount in need.items() if amount > have.get(name, 0) + 1e-9]
        if short:
            raise ScaleError(f"{replicas} generation replica(s) and {encoders} encoder replica(s) need "
                             f"{' and '.join(short)}; lower --replicas or the per-replica resources, "
                             "or add nodes (ray start --address)")

    def _wait_ready(self) -> dict[str, int]:
        """Wait until the application runs; its replica counts. Bounded: a replica that
        cannot be placed or fails to load ends the wait with Serve's own message."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            status = _app_status(APP_NAME)
            if status is not None and status.status == "RUNNING":
                return {name: status.deployments[name].replica_states.get("RUNNING", 0)
                        for name in (GENERATOR, ENCODER)}
            if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise ScaleError(f"the replicas failed to start: {_deploy_message(status)}")
            if time.monotonic() > deadline:
                said = f": {_deploy_message(status)}" if status is not None else ""
                raise ScaleError(f"the replicas were not ready within {self.ready_timeout:g} s{said}")
            time.sleep(_POLL)


def _app_status(name: str) -> Any:
    from ray import serve

    return serve.status().applications.get(name)


def _deploy_message(status: Any) -> str:
    """Serve's reason in one line: a replica's own flux2cli error when its constructor raised
    one (Serve's message then ends in that traceback), else Serve's first line."""
    messages = [status.message] + [deployment.message for deployment in status.deployments.values()]
    text = "\n".join(message for message in messages if message)
    ours = re.findall(r"^flux2cli\.errors\.\w+: (.+)$", text, flags=re.MULTILINE)
    return ours[-1].strip() if ours else (_first_line(text) or str(status.status))


def _first_line(error: Any) -> str:
    text = str(error).strip()
    return " ".join(text.split("\n", 1)[0].split())[:300]


def quiet_ray_logs() -> None:
    """Ray and Serve log every start and deployment at INFO; the front door says what matters."""
    import ray.serve  # noqa: F401 - it sets its logger's level when imported: set ours after

    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
