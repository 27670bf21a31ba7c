"""Generation on Ray Serve: `flux2 serve --replicas N` and ``serve run flux2cli.scale:app``.

The only package that imports Ray (the engine knows nothing of it):

* ``deployments``: the text-encoder and generator deployments (replica side);
* ``application``: ``build_app``, the application builder for ``serve run``/``serve deploy``;
* ``replicated``: ``ReplicatedEngine``, the aiohttp front door's engine that streams
  generations from the replicas and writes their images;
* ``cluster``: starting or joining Ray, deploying (or finding) the application, leaving.

Nothing is imported here: ``flux2cli.scale:app`` and ``:build_app`` resolve on first use,
so importing the package costs nothing without Ray installed.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "build_app"):  # one builder under both names Ray's import paths may use
        from flux2cli.scale.application import build_app

        return build_app
    raise AttributeError(f"module 'flux2cli.scale' has no attribute {name!r}")
