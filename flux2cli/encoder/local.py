"""The pipeline's own text encoder, behind the ``TextEncoder`` protocol."""

from __future__ import annotations

from typing import Any

from flux2cli.encoder.cache import EmbeddingKey
from flux2cli.errors import EncoderError


class LocalTextEncoder:
    """Runs the pipeline's own text encoder."""

    name = "local encoder"

    def __init__(self, pipe: Any):
        self._pipe = pipe

    def encode(self, key: EmbeddingKey) -> Any:
        import torch

        if getattr(self._pipe, "text_encoder", None) is None:
            raise EncoderError("this pipeline was loaded without a text encoder; use --local-encoder")
        with torch.inference_mode():
            embeds, _text_ids = self._pipe.encode_prompt(
                prompt=key.prompt,
                device=self._pipe._execution_device,
                num_images_per_prompt=1,
                max_sequence_length=key.max_sequence_length,
                text_encoder_out_layers=key.layers,
            )
        return embeds
