"""A text encoder behind HTTP: ``POST {"prompt": "..."}`` -> tensor bytes.

This is the protocol of the public FLUX.2 [dev] endpoint
(``https://remote-text-encoder-flux-2.huggingface.co/predict``, answering ``torch.save``
bytes) and of ``flux2cli.encoder.server`` (answering safetensors). Answers are
untrusted input:

* safetensors are parsed as such; a torch file is read with ``weights_only=True`` (tensors
  and plain containers only) — nothing is ever unpickled;
* the body is capped in size, and the whole exchange has one deadline (a server that
  drips a byte at a time cannot hold a generation past it);
* redirects are not followed, so the token never travels to another address;
* 503 (busy, starting, paused) is retried with back-off, honouring ``Retry-After``;
* the tensor's dtype, shape and finiteness are checked before the pipeline sees it.

Tokens: the Hugging Face token goes only to Hugging Face hosts. Any other endpoint gets
``FLUX2_ENCODER_TOKEN`` (the ``--api-key`` of a self-hosted encoder), so pointing
``--remote-encoder`` at a third party never leaks the user's hub credentials. Error
messages quote an endpoint's answer only as one short line, with the token blanked out
and tracebacks dropped: they reach web clients of ``flux2 serve``.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from flux2cli.encoder.cache import EmbeddingKey
from flux2cli.errors import EncoderError

PUBLIC_DEV_ENCODER_URL = "https://remote-text-encoder-flux-2.huggingface.co/predict"
_HF_HOST_SUFFIXES = (".huggingface.co", ".hf.space")
_FLOAT_DTYPES = ("float32", "float16", "bfloat16")
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # requests in all, for 503 answers and dropped connections
    backoff: float = 1.0  # seconds before the second attempt; doubles after each
    max_wait: float = 10.0  # cap on one wait, Retry-After included


NO_RETRY = RetryPolicy(attempts=1)


def token_for(url: str) -> str | None:
    """The bearer token to send to ``url`` (see the module docstring)."""
    host = (urlparse(url).hostname or "").lower()
    if host == "huggingface.co" or host.endswith(_HF_HOST_SUFFIXES):
        try:
            from huggingface_hub import get_token

            return get_token()
        except Exception:  # noqa: BLE001 - no token is a normal state
            return os.environ.get("HF_TOKEN")
    from flux2cli.settings import resolve

    return resolve("encoder_token")


def is_huggingface_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host == "huggingface.co" or host.endswith(_HF_HOST_SUFFIXES)


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
        retry: RetryPolicy = RetryPolicy(),
    ):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise EncoderError(f"the remote encoder URL must be http(s)://host/...; got {url!r}")
        self.url = url
        self.embed_dim = embed_dim
        self.dtype = dtype
        self.device = device
        self.token = token
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retry = retry

    # -- the TextEncoder protocol ------------------------------------------------------

    def encode(self, key: EmbeddingKey) -> Any:
        return self.fetch(key.prompt, key.max_sequence_length, retry=self.retry)

    # -- details -------------------------------------------------------------------------

    def expected_bytes_cap(self, sequence_length: int) -> int:
        """Twice an fp32 answer of the expected shape, plus room for headers."""
        if self.max_bytes is not None:
            return self.max_bytes
        return 2 * sequence_length * self.embed_dim * 4 + 64 * 1024

    def fetch(self, prompt: str, sequence_length: int, *, retry: RetryPolicy | None = None,
              timeout: float | None = None) -> Any:
        body = self._post(prompt, self.expected_bytes_cap(sequence_length), retry or self.retry,
                          timeout or self.timeout)
        tensor = decode_embeddings(body, where=self._where)
        tensor = check_embeddings(tensor, sequence_length, self.embed_dim, where=self._where)
        return tensor.to(device=self.device, dtype=self.dtype or tensor.dtype)

    def _failure(self, error: Exception, reason: Any) -> str:
        if isinstance(error, http.client.HTTPException):  # a garbled status line, headers or body
            return f"{self._where} sent a malformed HTTP answer ({type(error).__name__})"
        if isinstance(error, urllib.error.URLError):
            return f"{self._where} cannot be reached ({reason})"
        return f"{self._where} failed ({type(error).__name__})"

    @property
    def _where(self) -> str:
        parsed = urlparse(self.url)
        return f"the remote encoder at {parsed.scheme}://{parsed.netloc}"

    def _post(self, prompt: str, cap: int, retry: RetryPolicy, timeout: float) -> bytes:
        payload = json.dumps({"prompt": prompt}).encode()
        headers = {"Content-Type": "application/json",
                   "Accept": "application/octet-stream, application/x-safetensors, */*"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        wait = retry.backoff
        for attempt in range(1, retry.attempts + 1):
            request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
            with _Deadline(timeout) as deadline:
                try:
                    with _opener(deadline).open(request, timeout=timeout) as response:
                        body = _read_capped(response, cap, self._where)
                    if not deadline.expired:
                        return body
                    raise TimeoutError  # the answer was cut off at the deadline
                except urllib.error.HTTPError as error:
                    if error.code == 503 and attempt < retry.attempts:
                        time.sleep(_retry_after(error, wait, retry.max_wait))
                        wait = min(wait * 2, retry.max_wait)
                        continue
                    raise EncoderError(_http_error_message(error, self._where, self.token)) from None
                except (OSError, http.client.HTTPException, EncoderError) as error:
                    reason = getattr(error, "reason", error)  # URLError wraps the socket's error
                    if isinstance(reason, ConnectionResetError) and not deadline.expired and attempt < retry.attempts:
                        time.sleep(wait)
                        wait = min(wait * 2, retry.max_wait)
                        continue
                    if deadline.expired or isinstance(reason, TimeoutError):
                        raise EncoderError(f"{self._where} did not answer within {timeout:g} s") from error
                    if isinstance(error, EncoderError):
                        raise
                    raise EncoderError(self._failure(error, reason)) from error
        raise EncoderError(f"{self._where} kept answering 503 (busy or paused)")  # pragma: no cover


class _Deadline:
    """Shuts the request's sockets down once ``seconds`` have passed.

    Socket timeouts bound each read, not their sum: without this, an endpoint sending one
    byte just inside the timeout would hold the generation (and its lock) indefinitely.
    """

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read in the requesting thread
    except OSError:
        pass


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects surface as HTTPError: urllib would forward the Authorization header."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's usual opener (proxies included), without redirects, its sockets watched."""

    class HTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class HTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(HTTPConnection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(HTTPSConnection, req, context=self._context)

    return urllib.request.build_opener(HTTPHandler(), HTTPSHandler(), _RefuseRedirects())


def _retry_after(error: urllib.error.HTTPError, default: float, cap: float) -> float:
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return max(0.0, min(float(value), cap)) if value is not None else default
    except ValueError:
        return default


def _http_error_message(error: urllib.error.HTTPError, where: str, token: str | None) -> str:
    detail = _answer_detail(error, token)
    if 300 <= error.code < 400:
        return f"{where} answered a redirect ({error.code}); give --remote-encoder the final URL"
    if error.code in (401, 403):
        fix = ("log in with `hf auth login` or set HF_TOKEN" if token is None
               else "check the token (HF_TOKEN, or FLUX2_ENCODER_TOKEN for a self-hosted encoder)")
        return f"{where} refused the request ({error.code}); {fix}"
    if error.code == 503:
        return f"{where} is unavailable (503{': ' + detail if detail else ''}); try later or use --local-encoder"
    return f"{where} answered {error.code}{': ' + detail if detail else ''}"


def _answer_detail(error: urllib.error.HTTPError, token: str | None) -> str:
    """One short line of the endpoint's error text, safe to show to our own clients."""
    try:
        text = error.read(2048).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status is enough
        return ""
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


def _read_capped(response: Any, cap: int, where: str) -> bytes:
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise EncoderError(f"{where} sent {int(length)} bytes, more than the {cap}-byte limit for embeddings")
    chunks, total = [], 0
    while True:
        chunk = response.read(min(1 << 20, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise EncoderError(f"{where} sent more than the {cap}-byte limit for embeddings")
    if length is not None and length.isdigit() and total < int(length):
        raise EncoderError(f"{where} closed the connection after {total} of {int(length)} bytes")
    return b"".join(chunks)


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
