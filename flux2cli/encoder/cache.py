"""The text-encoder protocol and an LRU cache of prompt embeddings.

The cache key holds everything that changes the embedding: the model, the prompt, the
padded length (the transformer gets no attention mask, so padding changes the image) and
the encoder layers stacked into the embedding.

``local.LocalTextEncoder`` runs the pipeline's own encoder; ``remote.RemoteTextEncoder``
asks an HTTP endpoint (the [dev] remote-encoder protocol) and ``server`` serves one.
Which one a run uses is decided by ``flux2cli.pipeline.loading.load_model_parts``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EmbeddingKey:
    model: str
    prompt: str
    max_sequence_length: int
    layers: tuple[int, ...]


class TextEncoder(Protocol):
    name: str  # "local encoder" | "remote encoder"

    def encode(self, key: EmbeddingKey) -> Any:
        """Return prompt embeddings of shape (1, max_sequence_length, dim)."""


class CachedEncoder:
    """Encodes through ``encoder`` once per key and remembers the last ``capacity`` keys."""

    def __init__(self, encoder: TextEncoder, capacity: int = 32):
        self.encoder = encoder
        self.capacity = capacity
        self._entries: OrderedDict[EmbeddingKey, Any] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, key: EmbeddingKey) -> tuple[Any, float]:
        """Embeddings and the seconds spent encoding (0.0 on a cache hit)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], 0.0
        start = time.perf_counter()
        embeds = self.encoder.encode(key)
        seconds = time.perf_counter() - start
        with self._lock:
            self._entries[key] = embeds
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return embeds, seconds

    def __contains__(self, key: EmbeddingKey) -> bool:
        return key in self._entries
