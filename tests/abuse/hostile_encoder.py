"""A remote text encoder that answers whatever its ``mode`` says: pickles, floods, drips,
lies about sizes, wrong tensors, broken HTTP, leaked tokens, redirects.

It runs as an aiohttp app on 127.0.0.1 (``standins.ThreadedServer``); its one URL stays
fixed, so the engine under test is built once and each test only switches the mode.
"""

from __future__ import annotations

import asyncio
import io
import pickle
from pathlib import Path

import torch
from aiohttp import web
from safetensors.torch import save as save_safetensors

from test_remote_encoder import Evil  # unpickling it creates a marker file

STATE = web.AppKey("hostile_state", dict)
FLOOD_CHUNK = b"\0" * 65536
TWO_GB = 2 * 1024**3
HOLD_SECONDS = 3.0  # longer than the client's timeout; short, so shutting the endpoint down is quick


def hostile_encoder_app(sequence_length: int, width: int, marker: Path) -> web.Application:
    state = {"mode": "good", "stolen": [], "auth": []}
    shape = (1, sequence_length, width)

    def tensor_answer(tensor) -> web.Response:
        return web.Response(body=save_safetensors({"prompt_embeds": tensor}))

    async def predict(request: web.Request) -> web.StreamResponse:
        await request.read()
        authorization = request.headers.get("Authorization", "")
        state["auth"].append(authorization)
        mode = state["mode"]
        if mode == "good":
            return tensor_answer(torch.randn(shape))
        if mode == "pickle-in-torch-file":  # what torch.load without weights_only would run
            buffer = io.BytesIO()
            torch.save({"prompt_embeds": torch.randn(shape), "x": Evil(str(marker))}, buffer)
            return web.Response(body=buffer.getvalue())
        if mode == "plain-pickle":
            return web.Response(body=pickle.dumps(Evil(str(marker))))
        if mode == "legacy-torch-pickle":
            buffer = io.BytesIO()
            torch.save(Evil(str(marker)), buffer, _use_new_zipfile_serialization=False)
            return web.Response(body=buffer.getvalue())
        if mode == "declares-2gb":
            response = web.StreamResponse(headers={"Content-Length": str(TWO_GB)})
            await response.prepare(request)
            await response.write(FLOOD_CHUNK)
            await asyncio.sleep(HOLD_SECONDS)  # never sends the rest; the client must not wait for it
            return response
        if mode == "endless":
            return await _flood(request, TWO_GB // len(FLOOD_CHUNK))
        if mode == "drip":
            return await _drip(request, 4096, 0.02)
        if mode == "silent":
            await asyncio.sleep(HOLD_SECONDS)
            return tensor_answer(torch.randn(shape))
        if mode == "wrong-shape":
            return tensor_answer(torch.randn(1, sequence_length, width + 4))
        if mode == "wrong-length":
            return tensor_answer(torch.randn(1, sequence_length * 2, width))
        if mode in ("nan", "inf"):
            bad = torch.randn(shape)
            bad[0, 3, 5] = float(mode)
            return tensor_answer(bad)
        if mode == "http-500-traceback":
            return web.Response(status=500, text=f'Traceback (most recent call last):\n  File "/srv/encoder/app.py", '
                                                 f'line 7, in predict\nKeyError: {authorization}')
        if mode == "http-500-echo":
            return web.json_response({"error": f"token {authorization} has expired"}, status=500)
        if mode == "redirect":
            raise web.HTTPFound(location=str(request.url.with_path("/steal")))
        if mode == "redirect-307":
            raise web.HTTPTemporaryRedirect(location=str(request.url.with_path("/steal")))
        if mode == "malformed-status":
            request.transport.write(b"HELLO THERE\r\n\r\n")
            request.transport.close()
            return web.Response()
        if mode == "cut-short":
            request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"\0" * 10)
            request.transport.close()
            return web.Response()
        if mode == "html":
            return web.Response(text="<html>the space is sleeping</html>", content_type="text/html")
        raise AssertionError(f"unknown mode {mode}")

    async def steal(request: web.Request) -> web.Response:
        state["stolen"].append(request.headers.get("Authorization"))
        return web.Response(text="got it")

    app = web.Application()
    app[STATE] = state
    app.router.add_post("/predict", predict)
    app.router.add_route("*", "/steal", steal)
    return app


async def _flood(request: web.Request, chunks: int) -> web.StreamResponse:
    """Chunked zeros without end (one 64 KB buffer reused: nothing here allocates 2 GB)."""
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for _ in range(chunks):
            await response.write(FLOOD_CHUNK)
    except (ConnectionError, RuntimeError):
        pass  # the client hung up, as it should
    return response


async def _drip(request: web.Request, size: int, every: float) -> web.StreamResponse:
    """A small, honest Content-Length, one byte at a time: each read is quick, the whole is not."""
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    await response.prepare(request)
    try:
        for _ in range(size):
            await response.write(b"\0")
            await asyncio.sleep(every)
    except (ConnectionError, RuntimeError):
        pass
    return response
