"""Clients of a running ``flux2 serve``: ``delegate`` sends a `flux2 generate` there.

Nothing here imports torch, diffusers or aiohttp: the point of asking a resident server is
to skip seconds of imports and minutes of loading (httpx only, imported when used).
"""
