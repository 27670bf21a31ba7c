"""The Ray Serve application: an encoder deployment feeding a generator deployment.

``build_app(args)`` is an application builder, the form ``serve run`` and ``serve deploy``
config files import (``import_path: flux2cli.scale:build_app``, or ``flux2cli.scale:app``,
the same builder) with these ``args`` (strings from ``serve run ... key=value`` are
converted):

* ``model`` (required): a registry name (``flux2 info`` lists them);
* ``replicas`` (1), ``encoder_replicas`` (1): replicas of each deployment;
* ``cpus_per_replica`` (1), ``gpus_per_replica`` (0): Ray resources of each generator;
  each encoder replica takes ``gpus_per_replica`` GPUs and no CPU share (it works only
  when a new prompt arrives);
* ``options``: ``LoadOptions`` fields for the generators (``device``, ``compile``,
  ``offload``, ``vae_tiling``, ``decoder``); ``cache``: step caching of requests naming none.

It serves no HTTP itself (the ingress is the generator deployment, reached through its
handle): ``flux2 serve --ray-address ADDR`` is the front door, with the web UI and the API,
and uses a running application named ``flux2`` when there is one (see cluster.py).
"""

from __future__ import annotations

from typing import Any

APP_NAME = "flux2"
_LOAD_OPTION_KEYS = ("device", "compile", "offload", "vae_tiling", "decoder")


def build_app(args: dict[str, Any]) -> Any:
    """The ``serve.Application`` the args describe (see the module docstring)."""
    from flux2cli.errors import InvalidRequest
    from flux2cli.pipeline.registry import get_model
    from flux2cli.scale.deployments import GeneratorDeployment, TextEncoderDeployment

    if not args.get("model"):
        raise InvalidRequest("flux2cli.scale:build_app needs args.model, a model name (flux2 info lists them)")
    spec = get_model(str(args["model"]))
    options = dict(args.get("options") or {})
    unknown = sorted(set(options) - set(_LOAD_OPTION_KEYS))
    if unknown:
        raise InvalidRequest(f"flux2cli.scale:build_app: unknown options {', '.join(unknown)} "
                             f"(known: {', '.join(_LOAD_OPTION_KEYS)})")
    gpus = float(args.get("gpus_per_replica", 0))
    encoder = TextEncoderDeployment.options(
        num_replicas=int(args.get("encoder_replicas", 1)),
        ray_actor_options={"num_cpus": 0, "num_gpus": gpus},
    ).bind(spec.name, {key: options[key] for key in ("device",) if key in options})
    return GeneratorDeployment.options(
        num_replicas=int(args.get("replicas", 1)),
        ray_actor_options={"num_cpus": float(args.get("cpus_per_replica", 1)), "num_gpus": gpus},
    ).bind(spec.name, encoder, options, args.get("cache") or None)
