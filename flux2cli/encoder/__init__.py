"""Text encoders: the embedding cache and the pipeline's own encoder (``cache``), a remote
one over HTTP (``remote``), and a server that lets one machine encode for others
(``server``, aiohttp). Nothing is imported here: commands that never encode must not pay
for torch or aiohttp.
"""
