"""Text encoders: the embedding cache, the pipeline's own encoder, a remote one over HTTP,
and a server that lets one machine encode for others.

``cache`` (``EmbeddingKey``, ``CachedEncoder``) and ``local`` (``LocalTextEncoder``) are used
by the engine; ``remote`` (``RemoteTextEncoder``, httpx) by loading when an endpoint answers;
``server`` (``make_encoder_app``, aiohttp) by whoever serves one. Nothing is imported here:
the commands that never encode must not pay for torch, httpx or aiohttp.
"""
