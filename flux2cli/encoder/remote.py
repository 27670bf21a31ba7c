"""A text encoder behind HTTP: ``POST {"prompt": "..."}`` -> tensor bytes.

This is the protocol of the public FLUX.2 [dev] endpoint
(``https://remote-text-encoder-flux-2.huggingface.co/predict``, answering ``torch.save``
bytes) and of ``flux2cli.encoder.server`` (answering safetensors). Answers are untrusted
input:

* safetensors are parsed as such; a torch file is read with ``weights_only=True`` (tensors
  and plain containers only) — nothing is ever unpickled;
* the body is capped in size: a declared ``Content-Length`` over the cap is refused before
  anything is read, and the bytes that stream in are counted as they arrive;
* the whole call (connect, send, the wait, the body however slowly it drips, a retry) has
  one deadline: httpx's timeouts bound each network operation, not their sum, so the call
  runs under ``asyncio.wait_for`` as httpx's maintainers advise;
* redirects are not followed (httpx's default, kept), so the token never travels to
  another address;
* 503 (busy, starting, paused) and 429 are retried once when their ``Retry-After`` fits in
  what is left of the deadline;
* the tensor's dtype, shape and finiteness are checked before the pipeline sees it.

Tokens: the Hugging Face token goes only to Hugging Face hosts. Any other endpoint gets the
token its caller passes (``FLUX2_ENCODER_TOKEN``, the ``--api-key`` of a self-hosted
encoder, resolved by the front end), so pointing ``--remote-encoder`` at a third party
never leaks the user's hub credentials. Error messages quote an endpoint's answer only as
one short line, with the token blanked out and tracebacks dropped: they reach web clients
of ``flux2 serve``.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Coroutine
from urllib.parse import urlparse

from flux2cli.encoder.cache import EmbeddingKey
from flux2cli.errors import EncoderError

PUBLIC_DEV_ENCODER_URL = "https://remote-text-encoder-flux-2.huggingface.co/predict"
_HF_HOST_SUFFIXES = (".huggingface.co", ".hf.space")
_FLOAT_DTYPES = ("float32", "float16", "bfloat16")
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_HEADER = 100 * 1024 * 1024
_ERROR_TEXT_BYTES = 2048  # of an error answer: enough for one line of detail
_BUSY = {503: "is unavailable", 429: "is rate-limiting requests"}


def is_huggingface_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host == "huggingface.co" or host.endswith(_HF_HOST_SUFFIXES)


def token_for(url: str, encoder_token: str | None) -> str | None:
    """The bearer token to send to ``url``: the hub's for Hugging Face hosts, else ``encoder_token``."""
    if not is_huggingface_url(url):
        return encoder_token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - no token is a normal state
        return os.environ.get("HF_TOKEN")


class RemoteTextEncoder:
    """Encodes prompts by asking an HTTP endpoint; see the module docstring."""

    name = "remote encoder"

    def __init__(
        self,
        url: str,
        *,
        embed_dim: int,
        dtype: Any = None,
        device: Any = "cpu",
        token: str | None = None,
        timeout: float = 60.0,
        max_bytes: int | None = None,
        retry: bool = True,
    ):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise EncoderError(f"the remote encoder URL must be http(s)://host/...; got {url!r}")
        # A bare address (as `flux2 serve --encoder-only` prints) means the protocol's route.
        self.url = url.rstrip("/") + "/predict" if parsed.path in ("", "/") else url
        self.embed_dim = embed_dim
        self.dtype = dtype
        self.device = device
        self.token = token
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retry = retry
        self._ssl_context: Any = None  # built once: it costs ~45 ms, each call's client reuses it

    # -- the TextEncoder protocol ------------------------------------------------------

    def encode(self, key: EmbeddingKey) -> Any:
        return self.fetch(key.prompt, key.max_sequence_length)

    # -- details -------------------------------------------------------------------------

    def expected_bytes_cap(self, sequence_length: int) -> int:
        """Twice an fp32 answer of the expected shape, plus room for headers."""
        if self.max_bytes is not None:
            return self.max_bytes
        return 2 * sequence_length * self.embed_dim * 4 + 64 * 1024

    def fetch(self, prompt: str, sequence_length: int, *, retry: bool | None = None,
              timeout: float | None = None) -> Any:
        cap = self.expected_bytes_cap(sequence_length)
        retry = self.retry if retry is None else retry
        body = _run(lambda: self._post(prompt, cap, retry, timeout or self.timeout))
        tensor = decode_embeddings(body, where=self._where)
        tensor = check_embeddings(tensor, sequence_length, self.embed_dim, where=self._where)
        return tensor.to(device=self.device, dtype=self.dtype or tensor.dtype)

    @property
    def _where(self) -> str:
        parsed = urlparse(self.url)
        return f"the remote encoder at {parsed.scheme}://{parsed.netloc}"

    async def _post(self, prompt: str, cap: int, retry: bool, timeout: float) -> bytes:
        try:
            return await asyncio.wait_for(self._exchange(prompt, cap, retry, time.monotonic() + timeout), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise EncoderError(f"{self._where} did not answer within {timeout:g} s") from None

    async def _exchange(self, prompt: str, cap: int, retry: bool, deadline: float) -> bytes:
        import httpx

        headers = {"Accept": "application/octet-stream, application/x-safetensors, */*",
                   # Raw bytes only: a compressed answer could inflate far past the cap in one chunk.
                   "Accept-Encoding": "identity"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        # The per-operation timeout only backs up wait_for's deadline; redirects stay unfollowed.
        async with httpx.AsyncClient(verify=self._ssl_context, timeout=deadline - time.monotonic(),
                                     follow_redirects=False) as client:
            retried = False
            while True:
                try:
                    async with client.stream("POST", self.url, json={"prompt": prompt}, headers=headers) as response:
                        if response.is_success:
                            return await _read_capped(response, cap, self._where)
                        wait = _retry_after(response.headers.get("Retry-After"))
                        detail = _answer_detail(await _read_start(response), self.token)
                except httpx.TimeoutException:
                    raise asyncio.TimeoutError from None
                except httpx.HTTPError as error:
                    raise EncoderError(self._failure(error)) from None
                status = response.status_code
                if status in _BUSY and retry and not retried and wait is not None \
                        and wait < deadline - time.monotonic():
                    retried = True
                    await asyncio.sleep(wait)
                    continue
                raise EncoderError(_http_error_message(status, detail, wait, self._where, self.token))

    def _failure(self, error: Exception) -> str:
        import h11
        import httpx

        if isinstance(error, httpx.ConnectError):
            return f"{self._where} cannot be reached ({_os_reason(error)})"
        if isinstance(error, httpx.RemoteProtocolError):
            if any(isinstance(cause, h11.RemoteProtocolError) for cause in _causes(error)):  # h11 could not parse it
                return f"{self._where} sent a malformed HTTP answer ({type(error).__name__})"
            return f"{self._where} closed the connection without answering"
        return f"{self._where} failed ({type(error).__name__})"


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it wraps (httpx, httpcore and anyio each wrap the one below)."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and all(cause is not seen for seen in chain):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def _os_reason(error: BaseException) -> str:
    """The operating system's words for why a connection failed ("Connection refused"), else the error's."""
    for cause in reversed(_causes(error)):  # the socket's error is the innermost
        if isinstance(cause, socket.gaierror) and cause.strerror:
            return cause.strerror
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            return os.strerror(cause.errno)
    return str(error) or type(error).__name__


def _run(make_coroutine: Callable[[], Coroutine[Any, Any, bytes]]) -> bytes:
    """Run the coroutine ``make_coroutine()`` returns to its end, from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    # Called from inside an event loop (a notebook): the exchange gets a thread and loop of its own.
    with ThreadPoolExecutor(1, thread_name_prefix="flux2-remote-encoder") as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


async def _read_capped(response: Any, cap: int, where: str) -> bytes:
    import httpx

    length = response.headers.get("Content-Length")
    declared = int(length) if length is not None and length.isdigit() else None
    if declared is not None and declared > cap:
        raise EncoderError(f"{where} announced {declared} bytes, more than the {cap}-byte limit for embeddings")
    chunks, total = [], 0
    try:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise EncoderError(f"{where} sent more than the {cap}-byte limit for embeddings")
    except (httpx.RemoteProtocolError, httpx.ReadError):
        of = f" of {declared}" if declared is not None else ""
        raise EncoderError(f"{where} closed the connection after {total}{of} bytes") from None
    return b"".join(chunks)


async def _read_start(response: Any) -> bytes:
    """The first bytes of an error answer (its explanation), never the rest of it."""
    import httpx

    chunks, total = [], 0
    try:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            total += len(chunk)
            if total >= _ERROR_TEXT_BYTES:
                break
    except httpx.HTTPError:
        pass  # the status is enough
    return b"".join(chunks)[:_ERROR_TEXT_BYTES]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _http_error_message(status: int, detail: str, wait: float | None, where: str, token: str | None) -> str:
    said = f": {detail}" if detail else ""
    if 300 <= status < 400:
        return f"{where} answered a redirect ({status}); give --remote-encoder the final URL"
    if status in (401, 403):
        fix = ("log in with `hf auth login` or set HF_TOKEN" if token is None
               else "check the token (HF_TOKEN, or FLUX2_ENCODER_TOKEN for a self-hosted encoder)")
        return f"{where} refused the request ({status}); {fix}"
    if status in _BUSY:
        when = f" and asks to be retried in {math.ceil(wait):d} s" if wait is not None else ""
        return f"{where} {_BUSY[status]} ({status}{said}){when}; try later or use --local-encoder"
    return f"{where} answered {status}{said}"


def _answer_detail(body: bytes, token: str | None) -> str:
    """One short line of the endpoint's error text, safe to show to our own clients."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            text = str(parsed.get("error") or parsed.get("detail") or "")
    except ValueError:
        pass
    if "Traceback" in text or "File \"" in text:
        return ""  # another program's internals: its log is the place for them
    line = text.strip().split("\n", 1)[0]
    if token:
        line = line.replace(token, "***")  # an endpoint that echoes credentials must not spread them
    return " ".join(line.split())[:160]


# --------------------------------------------------------------------------- payloads


def decode_embeddings(body: bytes, *, where: str = "the remote encoder") -> Any:
    """Tensor from safetensors bytes or a torch file (``weights_only=True``); never pickle."""
    import torch

    if not body:
        raise EncoderError(f"{where} sent an empty answer")
    if body.startswith(_ZIP_MAGIC):
        # torch.save's zip format; the restricted unpickler allows tensors and containers only.
        try:
            loaded = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any refusal means "not plain tensors"
            raise EncoderError(f"{where} sent a torch file that is not plain tensors "
                               f"({type(error).__name__}); refusing to load it") from error
        return _pick_tensor(loaded, where)
    if _looks_like_safetensors(body):
        from safetensors.torch import load as load_safetensors

        try:
            loaded = load_safetensors(body)
        except Exception as error:  # noqa: BLE001
            raise EncoderError(f"{where} sent invalid safetensors ({type(error).__name__})") from error
        return _pick_tensor(loaded, where)
    raise EncoderError(f"{where} sent neither safetensors nor a torch tensor file; refusing to load it")


def _looks_like_safetensors(body: bytes) -> bool:
    if len(body) < 10:
        return False
    (header_len,) = struct.unpack("<Q", body[:8])
    return 2 <= header_len <= min(_MAX_HEADER, len(body) - 8) and body[8:9] == b"{"


def _pick_tensor(loaded: Any, where: str) -> Any:
    import torch

    if isinstance(loaded, torch.Tensor):
        return loaded
    if isinstance(loaded, dict):
        if isinstance(loaded.get("prompt_embeds"), torch.Tensor):
            return loaded["prompt_embeds"]
        tensors = [value for value in loaded.values() if isinstance(value, torch.Tensor)]
    elif isinstance(loaded, (list, tuple)):
        tensors = [value for value in loaded if isinstance(value, torch.Tensor)]
    else:
        tensors = []
    if len(tensors) == 1:
        return tensors[0]
    raise EncoderError(f"{where} sent {type(loaded).__name__} without exactly one embeddings tensor")


def check_embeddings(tensor: Any, sequence_length: int, embed_dim: int, *,
                     where: str = "the remote encoder") -> Any:
    """Shape (1, sequence_length, embed_dim) (or without the batch axis), float, finite."""
    import torch

    if str(tensor.dtype).removeprefix("torch.") not in _FLOAT_DTYPES:
        raise EncoderError(f"{where} sent {tensor.dtype} embeddings; expected a float tensor")
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    expected = (1, sequence_length, embed_dim)
    if tuple(tensor.shape) != expected:
        raise EncoderError(f"{where} sent embeddings of shape {tuple(tensor.shape)}; this model needs "
                           f"{expected} (is the encoder serving another model?)")
    if not bool(torch.isfinite(tensor).all()):
        raise EncoderError(f"{where} sent embeddings with NaN or infinite values")
    return tensor.contiguous()
