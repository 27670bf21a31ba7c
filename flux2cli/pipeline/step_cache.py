"""Step caching: reuse transformer work between denoising steps, through diffusers' cache hooks.

* ``taylorseer``: diffusers' ``TaylorSeerCacheConfig`` on the FLUX.2 transformer
  (``enable_cache``): every block's attention output is computed on refresh steps and
  forecast by a first-order Taylor series in between (full evaluation every 3rd step after
  the first 4, factors kept in fp32: bf16 factors drift visibly on long schedules).
* ``fbc``: First Block Cache (``FirstBlockCacheConfig``). diffusers' hook takes the first and
  the last registered block as head and tail, but in FLUX.2 the first is a double-stream
  block (two outputs: text, image) and the last a single-stream block (one joined output),
  so the residual it caches has no single shape and the stock hook fails. Here the cache
  spans the single-stream blocks only (the bulk of the model: 20 of 25 blocks in [klein]
  4B, 48 of 56 in [dev]): when the first single block's output changed by less than the
  threshold since the last full step, the rest are skipped and their cached residual added.

Installed for one generation and removed after it, so every request chooses its own mode
and starts with a clean cache. ``Counter.evaluations`` counts the steps (CFG passes
included) in which the whole transformer ran: fewer than the steps means work was reused.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from flux2cli.pipeline.fields import CACHE_MODES as MODES  # declared with the request field

FBC_THRESHOLD = 0.1  # relative change of the first single block's residual
TAYLORSEER_INTERVAL = 3
TAYLORSEER_WARMUP = 4


@dataclass
class Counter:
    evaluations: int = 0  # transformer calls in which every block ran
    calls: int = 0  # all transformer calls: steps x CFG passes

    def report(self, mode: str, steps: int) -> dict[str, Any]:
        """What results and metadata say of the work done: full evaluations of ``calls``."""
        return {"cache": mode, "steps": steps, "transformer_calls": self.calls, "full_evaluations": self.evaluations}


@contextmanager
def step_cache(transformer: Any, mode: str) -> Iterator[Counter]:
    """Install ``mode`` on ``transformer`` for the duration; yields the evaluation counter."""
    import torch

    if mode not in MODES:
        raise ValueError(f"unknown cache mode {mode!r}")
    counter = Counter()
    # A pre-hook runs in Module.__call__, whatever forward the cache hooks put in place.
    calls = transformer.register_forward_pre_hook(lambda *_: setattr(counter, "calls", counter.calls + 1))
    if mode == "off":
        # Every call is a full one; no hook inside the blocks, which --compile would have to trace.
        try:
            yield counter
        finally:
            calls.remove()
            counter.evaluations = counter.calls
        return
    # The last single block's attention runs only in a full evaluation: both caches skip it.
    attention = transformer.single_transformer_blocks[-1].attn
    probe = [module for module in attention.modules() if isinstance(module, torch.nn.Linear)][-1]
    handle = probe.register_forward_hook(lambda *_: setattr(counter, "evaluations", counter.evaluations + 1))
    try:
        if mode == "taylorseer":
            from diffusers.hooks import TaylorSeerCacheConfig

            transformer.enable_cache(TaylorSeerCacheConfig(
                cache_interval=TAYLORSEER_INTERVAL, disable_cache_before_step=TAYLORSEER_WARMUP,
                taylor_factors_dtype=torch.float32))
            try:
                yield counter
            finally:
                transformer.disable_cache()
        else:
            with _first_block_cache(transformer):
                yield counter
    finally:
        handle.remove()
        calls.remove()


@contextmanager
def _first_block_cache(transformer: Any) -> Iterator[None]:
    import torch
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

    shell = torch.nn.Module()  # holds the transformer's own single blocks (shared, not copied)
    shell.single_transformer_blocks = transformer.single_transformer_blocks
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    apply_first_block_cache(shell, FirstBlockCacheConfig(threshold=FBC_THRESHOLD))
    registry.invalidate_child_registries_cache()  # the blocks' new hooks must see the cache context
    try:
        # [dev] and KV pipelines name no cache context of their own; klein's nest inside this one.
        with transformer.cache_context("flux2"):
            yield
    finally:
        registry.remove_hook(_FBC_LEADER_BLOCK_HOOK, recurse=True)
        registry.remove_hook(_FBC_BLOCK_HOOK, recurse=True)
        registry.invalidate_child_registries_cache()
