"""LoRA adapters for the FLUX.2 transformer: find them, read them in any shared format, apply them.

- ``refs``: ``LoraRef`` (name, scale, sha256), the request's view of a LoRA; pure Python.
- ``files``: safetensors headers read without torch, sha256, ``SOURCE[:SCALE]`` parsing,
  sources (file, folder, hub repo, shipped name) resolved to files, and ``LoraCatalog``,
  the names a front end makes available.
- ``formats``: format detection from the keys, the family a file was made for, and the
  conversion of every format into one PEFT layout for diffusers' ``Flux2Transformer2DModel``.
- ``adapters``: ``LoraAdapters``, the engine's set of loaded PEFT adapters (stack, scale,
  swap, fuse, unload).

Importing this package imports nothing heavy: ``flux2 --help`` and ``flux2 info`` use it.
"""
