"""`flux2 serve --replicas N`: the aiohttp server in front of Ray Serve replicas.

The same server as in process (every route, the web UI, the job queue, the output folder)
with a ``ReplicatedEngine`` in place of the loaded model; Ray is started (or joined) before
it listens and left after it stops, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import signal
from typing import Any, Callable


def serve_on_ray(spec: Any, config: Any, args: dict[str, Any], *, ray_address: str | None,
                 on_ready: Callable[[Any, str], None], notify: Callable[[str], None]) -> None:
    """Serve ``spec`` on replicas described by ``args`` (``application.build_app``'s) until a signal."""
    from flux2cli.scale.cluster import RayCluster
    from flux2cli.server.app import run_server

    # SIGTERM while Ray starts or replicas load: leave as Ctrl-C does, through the cleanup
    # below (run_server installs its own handlers once it listens).
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with RayCluster(ray_address) as cluster:
            where = f"the Ray cluster at {ray_address}" if ray_address else "a local Ray instance"
            notify(f"starting {args['replicas']} generation replica(s) and {args['encoder_replicas']} "
                   f"encoder replica(s) of {spec.display_name} on {where}…")
            engine = cluster.start(spec, args, preview_every=config.preview_every)
            signal.signal(signal.SIGTERM, previous)
            run_server(engine, config, on_ready=lambda url: on_ready(engine, url))
    finally:
        signal.signal(signal.SIGTERM, previous)
