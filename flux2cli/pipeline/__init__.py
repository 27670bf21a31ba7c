"""The one pipeline layer shared by the CLI, the REPL, the server and the Python API.

Modules here that import torch or diffusers (``engine``, ``loading``, ``gguf``)
do so only inside functions, so importing this package stays cheap.
"""
