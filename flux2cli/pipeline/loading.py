"""Turning a registry entry into a ready diffusers pipeline and its text encoder.

One path for every model: fetch what is needed from the hub (``snapshot_download`` with
only the folders this run uses: no transformer weights for GGUF runs, no text encoder
when a remote encoder answers), build the transformer (safetensors, bitsandbytes NF4, or
GGUF), load the pipeline around it, place it (offloading), then install VAE tiling and
``torch.compile``. Hub failures become one line naming the repo and the fix.

Nothing here reads flux2cli's settings: the front ends resolve them (the encoder endpoint
and token, the hub cache folder) and pass them in ``LoadOptions``.

Imports of torch, diffusers and huggingface_hub happen inside the functions: this module
is imported by commands that must start fast.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from flux2cli.errors import EncoderError, InvalidRequest, ModelLoadError
from flux2cli.pipeline.memory import (
    OFFLOAD_MODES,
    TILING_MODES,
    AutoTiling,
    OffloadPlan,
    apply_offload,
    check_choice,
    compile_transformer,
    install_auto_tiling,
    plan_offload,
)
from flux2cli.pipeline.library_imports import import_pipeline_class
from flux2cli.pipeline.registry import DECODERS, SMALL_DECODER_REPO, ModelSpec
from flux2cli.probe import pick_device

PROBE_TIMEOUT = 10.0  # seconds the load waits for a remote encoder before using the local one
_ENCODER_PARTS = ("text_encoder", "tokenizer")


@dataclass(frozen=True)
class LoadOptions:
    device: str | None = None  # None: cuda, else mps, else cpu
    local_encoder: bool = False  # force the model's own text encoder
    remote_encoder: str | None = None  # URL of an encoder endpoint (any model)
    compile: bool = False
    offload: str = "auto"  # auto | none | model | sequential
    vae_tiling: str = "auto"  # auto | on | off
    decoder: str = "full"  # full | small: BFL's FLUX.2-small-decoder in place of the VAE's own
    # The [dev] models' endpoint when remote_encoder is not given (FLUX2_ENCODER_URL);
    # None: the public one.
    encoder_url: str | None = None
    # Bearer token for an endpoint off the Hugging Face hosts (FLUX2_ENCODER_TOKEN); those
    # get the hub token. Never in repr: options get logged.
    encoder_token: str | None = field(default=None, repr=False)
    # The Hugging Face cache folder; None: huggingface_hub's own, fixed when it was imported.
    hub_cache: Path | None = None
    # Called with each one-line notice while loading (the CLI prints them as they come).
    notify: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    # A ready TextEncoder that encodes elsewhere (flux2cli.scale's client of a Ray Serve
    # encoder deployment): used as is, and the model's own text encoder is not loaded.
    text_encoder: Any | None = field(default=None, compare=False, repr=False)

    def validate(self) -> LoadOptions:
        """Refuse contradictory or unknown values before anything is loaded."""
        if self.local_encoder and self.remote_encoder:
            raise InvalidRequest("--local-encoder and --remote-encoder exclude each other; pick one")
        if self.remote_encoder is not None:
            from urllib.parse import urlparse

            parsed = urlparse(self.remote_encoder)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise InvalidRequest(f"--remote-encoder takes an http(s):// URL, e.g. http://host:2223 "
                                     f"(got {self.remote_encoder!r})")
        check_choice("--offload", self.offload, OFFLOAD_MODES)
        check_choice("--vae-tiling", self.vae_tiling, TILING_MODES)
        check_choice("--decoder", self.decoder, DECODERS)
        return self


@dataclass
class LoadedModel:
    """Everything ``Engine`` needs from a load."""

    spec: ModelSpec
    pipe: Any
    device: str
    encoder: Any  # a TextEncoder: LocalTextEncoder or RemoteTextEncoder
    offload: OffloadPlan
    tiling: AutoTiling | None
    notices: tuple[str, ...] = ()


def load_model_parts(spec: ModelSpec, options: LoadOptions | None = None) -> LoadedModel:
    """Load ``spec`` as ``options`` say; see the module docstring for the steps."""
    options = (options or LoadOptions()).validate()
    notices: list[str] = []

    def notify(message: str) -> None:
        notices.append(message)
        if options.notify is not None:
            options.notify(message)

    device = pick_device(options.device)
    dtype = _dtype(spec, device)
    plan_offload(options.offload, device, spec.memory_gb, quantization=spec.quantization)  # refuse bad choices now

    # The (gated) base repo first: a missing licence or token fails before a 20-60 GB GGUF download.
    folder = _model_folder(spec, include_transformer=spec.gguf is None, include_encoder=False,
                           hub_cache=options.hub_cache)
    gguf_path = _gguf_file(spec, options.hub_cache) if spec.gguf is not None else None
    embed_dim = _transformer_config(folder)["joint_attention_dim"]
    encoder = options.text_encoder or _remote_encoder(spec, options, embed_dim=embed_dim, dtype=dtype,
                                                      device=device, notify=notify)
    if encoder is None:
        folder = _model_folder(spec, include_transformer=gguf_path is None, include_encoder=True,
                               hub_cache=options.hub_cache)
    need_gb = spec.memory_gb + (spec.encoder_memory_gb if encoder is None else 0.0)
    offload = plan_offload(options.offload, device, need_gb, quantization=spec.quantization)
    if device not in ("cpu", "mps") and options.offload == "auto":
        notify(f"offload: {offload.mode} ({offload.reason})")

    quiet_library_output()  # the first import of diffusers/transformers: after the hub, which fails faster
    quantized = _bnb_quantized_parts(folder, include_encoder=encoder is None)
    import_pipeline_class(spec.pipeline_class, bitsandbytes=bool(quantized))  # first, before any diffusers model
    vae = _small_decoder_vae(spec, folder, dtype, options.hub_cache) if options.decoder == "small" else None
    pipe = _build_pipeline(spec, folder, dtype=dtype, device=device, gguf_path=gguf_path,
                           with_encoder=encoder is None, bnb_cpu=bool(quantized) and device == "cpu", vae=vae)
    if quantized and device == "cpu":
        _disable_bnb_cpu_fast_path_where_unsupported(pipe)
    apply_offload(pipe, offload, device, quantized_parts=quantized)
    pipe.set_progress_bar_config(disable=True)
    tiling = install_auto_tiling(pipe.vae, options.vae_tiling, spec.size_scale) if pipe.vae is not None else None
    if options.compile:
        how = compile_transformer(pipe.transformer)
        notify(f"--compile: the transformer's {how} compile on the first image (slow); "
               "each new image size compiles again")
    if encoder is None:
        from flux2cli.encoder.local import LocalTextEncoder

        encoder = LocalTextEncoder(pipe)
    return LoadedModel(spec, pipe, device, encoder, offload, tiling, tuple(notices))


def load_text_encoder(spec: ModelSpec, options: LoadOptions | None = None) -> Any:
    """Only ``spec``'s text encoder and tokenizer, as a ``TextEncoder`` (``flux2 serve
    --encoder-only``, the encoder of split serving): the transformer and the VAE are neither
    downloaded nor loaded, so a machine needs room for the encoder alone."""
    options = (options or LoadOptions()).validate()
    device = pick_device(options.device)
    dtype = _dtype(spec, device)
    folder = _model_folder(spec, include_transformer=False, include_encoder=True, include_vae=False,
                           hub_cache=options.hub_cache)
    offload = plan_offload(options.offload, device, spec.encoder_memory_gb, quantization=spec.quantization)
    quiet_library_output()
    quantized = _bnb_quantized_parts(folder, include_encoder=True, include_transformer=False)
    import_pipeline_class(spec.pipeline_class, bitsandbytes=bool(quantized))
    pipe = _build_pipeline(spec, folder, dtype=dtype, device=device, gguf_path=None, with_encoder=True,
                           with_generator=False, bnb_cpu=bool(quantized) and device == "cpu")
    if quantized and device == "cpu":
        _disable_bnb_cpu_fast_path_where_unsupported(pipe)
    apply_offload(pipe, offload, device, quantized_parts=quantized)
    from flux2cli.encoder.local import LocalTextEncoder

    return LocalTextEncoder(pipe)


def _dtype(spec: ModelSpec, device: str) -> Any:
    import torch

    # fp32 on the CPU: bf16 matmuls there are slow and the tiny model is trained in fp32.
    return torch.bfloat16 if device != "cpu" and spec.quantization != "fp32" else torch.float32


# --------------------------------------------------------------------------- sources


def _gguf_file(spec: ModelSpec, hub_cache: Path | None) -> Path:
    """The GGUF file: a local path, or the registry's file fetched from (or found in) the hub cache."""
    from flux2cli.pipeline.gguf import describe_gguf_file

    source = spec.gguf
    if source.is_local:
        return describe_gguf_file(source.filename).path
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(source.repo, source.filename, cache_dir=hub_cache, local_files_only=_hub_offline())
    except Exception as error:
        raise ModelLoadError(hub_error_message(source.repo, error, filename=source.filename,
                                               size_gb=source.size_gb)) from error
    return describe_gguf_file(path).path


def _model_folder(spec: ModelSpec, *, include_transformer: bool, include_encoder: bool, include_vae: bool = True,
                  hub_cache: Path | None = None) -> Path:
    """The diffusers folder: shipped with the package, or a hub snapshot of what this run needs."""
    if spec.local_dir is not None:
        if not (spec.local_dir / "model_index.json").is_file():
            raise ModelLoadError(f"the embedded model folder {spec.local_dir.name!r} is missing; reinstall flux2cli")
        return spec.local_dir
    patterns = ["model_index.json", "scheduler/*", "transformer/config.json"] + (["vae/*"] if include_vae else [])
    if include_transformer:
        patterns.append("transformer/*")
    if include_encoder:
        patterns += [f"{part}/*" for part in _ENCODER_PARTS]
    try:
        from huggingface_hub import snapshot_download

        # HF_HUB_OFFLINE is read now, not at import: set after huggingface_hub was imported
        # (a long-lived process, tests) it still counts. The cache folder comes from the caller.
        folder = Path(snapshot_download(spec.repo, allow_patterns=patterns, cache_dir=hub_cache,
                                        local_files_only=_hub_offline()))
    except Exception as error:
        raise ModelLoadError(hub_error_message(spec, error)) from error
    needed = (["vae"] if include_vae else []) + (["transformer"] if include_transformer else []) + (
        list(_ENCODER_PARTS) if include_encoder else [])
    missing = [part for part in needed if not (folder / part).is_dir() or not any((folder / part).iterdir())]
    if missing:  # an offline cache filled by an earlier run that needed less
        hint = " (earlier runs used a remote encoder)" if set(missing) <= set(_ENCODER_PARTS) else ""
        fix = "unset HF_HUB_OFFLINE to download it" if _hub_offline() else "run again to complete the download"
        raise ModelLoadError(f"the cached copy of {spec.repo} lacks {', '.join(missing)}{hint}; {fix}")
    return folder


def _small_decoder_vae(spec: ModelSpec, folder: Path, dtype: Any, hub_cache: Path | None) -> Any:
    """BFL's small decoder, loaded as diffusers does: one whole ``AutoencoderKLFlux2`` folder
    whose ``decoder_block_out_channels`` narrow only the decoder; its encoder is FLUX.2's, so
    reference images and img2img encode exactly as with the model's own VAE."""
    try:
        from huggingface_hub import snapshot_download

        where = Path(snapshot_download(SMALL_DECODER_REPO, allow_patterns=["config.json", "*.safetensors"],
                                       cache_dir=hub_cache, local_files_only=_hub_offline()))
        small = json.loads((where / "config.json").read_text())
    except Exception as error:
        raise ModelLoadError(hub_error_message(SMALL_DECODER_REPO, error)) from error
    own = json.loads((folder / "vae" / "config.json").read_text())
    if any(small.get(key) != own.get(key) for key in ("latent_channels", "block_out_channels", "patch_size")):
        raise InvalidRequest(f"--decoder small decodes FLUX.2's latents; {spec.display_name}'s VAE is another "
                             f"({own.get('latent_channels')} latent channels, not {small.get('latent_channels')}): "
                             "drop --decoder small")
    from diffusers import AutoencoderKLFlux2

    try:
        return AutoencoderKLFlux2.from_pretrained(str(where), torch_dtype=dtype)
    except Exception as error:
        raise ModelLoadError(hub_error_message(SMALL_DECODER_REPO, error)) from error


def _transformer_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "transformer" / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{folder} has no readable transformer/config.json") from error


def _bnb_quantized_parts(folder: Path, *, include_encoder: bool, include_transformer: bool = True) -> tuple[str, ...]:
    """Components saved with a bitsandbytes ``quantization_config``."""
    parts = []
    for part, included in (("transformer", include_transformer), ("text_encoder", include_encoder)):
        if not included:
            continue
        try:
            config = json.loads((folder / part / "config.json").read_text())
        except (OSError, ValueError):
            continue
        quant = config.get("quantization_config") or {}
        if quant.get("quant_method") == "bitsandbytes" or quant.get("load_in_4bit") or quant.get("_load_in_4bit"):
            parts.append(part)
    return tuple(parts)


# --------------------------------------------------------------------------- building


def _build_pipeline(spec: ModelSpec, folder: Path, *, dtype: Any, device: str, gguf_path: Path | None,
                    with_encoder: bool, bnb_cpu: bool, vae: Any = None, with_generator: bool = True) -> Any:
    import diffusers

    pipeline_cls = getattr(diffusers, spec.pipeline_class)
    kwargs: dict[str, Any] = {"torch_dtype": dtype}
    if vae is not None:
        kwargs["vae"] = vae
    if gguf_path is not None:
        from flux2cli.pipeline.gguf import load_gguf_transformer

        kwargs["transformer"] = load_gguf_transformer(gguf_path, folder, dtype)
    if not with_encoder:
        kwargs.update(text_encoder=None, tokenizer=None)
    if not with_generator:  # diffusers skips a component passed as None
        kwargs.update(transformer=None, vae=None)
    plain_tokenizer = None
    if with_encoder and _needs_torchvision_free_tokenizer(folder):
        plain_tokenizer = _plain_tokenizer(spec, folder)
        kwargs["tokenizer"] = None  # set after loading: diffusers checks a passed one against the index
    if bnb_cpu:
        # Pre-quantized bitsandbytes weights are placed while loading: on a CPU-only
        # machine they must be told so, or accelerate asks for CUDA.
        kwargs["device_map"] = "cpu"
    try:
        with _bitsandbytes_on_cpu() if bnb_cpu else _nothing():
            pipe = pipeline_cls.from_pretrained(str(folder), **kwargs)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(hub_error_message(spec, error)) from error
    if plain_tokenizer is not None:
        pipe.register_modules(tokenizer=plain_tokenizer)
    return pipe


def _needs_torchvision_free_tokenizer(folder: Path) -> bool:
    """[dev]'s tokenizer is a ``PixtralProcessor``, which transformers builds only with
    torchvision; the pipeline uses nothing of it but its tokenizer and chat template."""
    import importlib.util

    try:
        entry = json.loads((folder / "model_index.json").read_text()).get("tokenizer") or []
    except (OSError, ValueError):
        return False
    return "PixtralProcessor" in entry and importlib.util.find_spec("torchvision") is None


def _plain_tokenizer(spec: ModelSpec, folder: Path) -> Any:
    """The processor's tokenizer and chat template, loaded without torchvision."""
    from transformers import AutoTokenizer

    where = folder / "tokenizer"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where))
    except Exception as error:
        raise ModelLoadError(f"the local text encoder of {spec.repo} needs torchvision for its tokenizer "
                             "(PixtralProcessor); install the torchvision build matching your torch, "
                             "or use a remote encoder") from error
    if not getattr(tokenizer, "chat_template", None):
        for name in ("chat_template.jinja", "chat_template.json"):
            path = where / name
            if path.is_file():
                text = path.read_text()
                tokenizer.chat_template = json.loads(text)["chat_template"] if name.endswith(".json") else text
                break
    return tokenizer


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _bitsandbytes_on_cpu() -> Iterator[None]:
    """Let diffusers load bitsandbytes 4-bit weights on a machine without a GPU.

    bitsandbytes has a CPU backend (0.46+) and transformers accepts it, but diffusers'
    4-bit quantizer still refuses with "No GPU found". The check is relaxed only for the
    duration of this load; everything else it verifies is checked as before.
    """
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import BnB4BitDiffusersQuantizer

    original = BnB4BitDiffusersQuantizer.validate_environment

    def validate_environment(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except RuntimeError as error:
            if "No GPU found" not in str(error):
                raise
            return None

    BnB4BitDiffusersQuantizer.validate_environment = validate_environment
    try:
        yield
    finally:
        BnB4BitDiffusersQuantizer.validate_environment = original


def _disable_bnb_cpu_fast_path_where_unsupported(pipe: Any) -> int:
    """bitsandbytes' CPU fast path (AVX512-BF16 packing) needs out_features % 32 == 0 and
    in_features % blocksize == 0; other layers crash in it ("shape '[32, 0]' is invalid"),
    so they take the generic path. Returns how many layers were switched."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    switched = 0
    for name in ("transformer", "text_encoder"):
        component = getattr(pipe, name, None)
        if component is None:
            continue
        for module in component.modules():
            if isinstance(module, Linear4bit):
                blocksize = getattr(module.weight, "blocksize", 64) or 64
                if module.in_features % blocksize or module.out_features % 32:
                    module.support_avx512bf16_for_cpu = False
                    switched += 1
    return switched


def quiet_library_output() -> None:
    """Hide per-component loading bars and deprecation chatter; hub download bars stay."""
    import logging
    import warnings

    # bitsandbytes warns on import, on CPUs with AVX512-BF16, that an optional kernel
    # package is missing; the warning would break the CLI's one-line errors.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)


# --------------------------------------------------------------------------- text encoder


def _remote_encoder(spec: ModelSpec, options: LoadOptions, *, embed_dim: int, dtype: Any, device: str,
                    notify: Callable[[str], None]) -> Any | None:
    """A reachable remote encoder, or None for the local one (with a one-line notice why).

    ``--remote-encoder URL`` works for any model. Without it, [dev] models try
    ``options.encoder_url`` (FLUX2_ENCODER_URL) or the public endpoint; other models
    encode locally.
    """
    from flux2cli.encoder.remote import PUBLIC_DEV_ENCODER_URL, RemoteTextEncoder, is_huggingface_url, token_for

    if options.local_encoder:
        return None
    url = options.remote_encoder
    if url is None:
        if not spec.remote_encoder_capable:
            return None
        url = options.encoder_url or PUBLIC_DEV_ENCODER_URL
    token = token_for(url, options.encoder_token)
    if is_huggingface_url(url):
        if _hub_offline():
            notify("HF_HUB_OFFLINE is set: prompts are encoded by the local text encoder")
            return None
        if token is None:
            notify("no Hugging Face token for the remote text encoder (`hf auth login`): "
                   "prompts are encoded by the local text encoder")
            return None
    try:
        encoder = RemoteTextEncoder(url, embed_dim=embed_dim, dtype=dtype, device=device, token=token)
        encoder.fetch("", spec.max_sequence_length, retry=False, timeout=PROBE_TIMEOUT)
    except EncoderError as error:
        reason = str(error).replace("; try later or use --local-encoder", "")
        notify(f"{reason}: prompts are encoded by the local text encoder")
        return None
    return encoder


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- errors


# What works with no download and no GPU: said wherever a model cannot be fetched.
_TRY_TINY = " (or try things with --model tiny: embedded, it runs on a CPU)"


def hub_error_message(spec: ModelSpec | str, error: BaseException, *, filename: str | None = None,
                      size_gb: float | None = None) -> str:
    """One line naming the repo and the fix, for the usual hub failures (by huggingface_hub's types)."""
    from huggingface_hub import errors as hub

    if isinstance(spec, ModelSpec):
        repo = spec.repo or str(spec.local_dir)
    else:
        repo = spec
    page = f"https://huggingface.co/{repo}"
    if _is_disk_full(error):
        need = f" (~{size_gb:g} GB)" if size_gb else ""
        return (f"not enough disk space to download {repo}{need}; free space, or point HF_HUB_CACHE "
                "(or HF_HOME) at a larger disk")
    if isinstance(error, hub.GatedRepoError):  # before its base class, RepositoryNotFoundError
        if _no_token():
            return (f"{repo} is gated: accept its licence at {page}, then log in with `hf auth login` "
                    "(or set HF_TOKEN)")
        return f"{repo} is gated and your token has no access yet: accept its licence at {page}"
    if isinstance(error, hub.RepositoryNotFoundError):
        return f"{repo} was not found on the Hugging Face hub, or your token cannot see it (`hf auth login`)"
    if isinstance(error, hub.RevisionNotFoundError):
        return f"{repo} has no such revision on the Hugging Face hub"
    if isinstance(error, hub.HfHubHTTPError) and _status(error) == 401:
        return f"your Hugging Face token was refused for {repo}; run `hf auth login` or set HF_TOKEN"
    # EntryNotFoundError covers both sides; only the local one means "not downloaded".
    if filename and isinstance(error, hub.EntryNotFoundError) and not isinstance(error, hub.LocalEntryNotFoundError):
        return (f"{filename} is not in {repo} (renamed or removed?); pass a downloaded file with "
                "--gguf PATH.gguf, or another quant")
    if isinstance(error, (hub.LocalEntryNotFoundError, hub.OfflineModeIsEnabled)):
        what = f"{filename} from {repo}" if filename else repo
        if _hub_offline():
            return (f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                    f"unset HF_HUB_OFFLINE to download it{_TRY_TINY}")
        return (f"{what} is not in the local Hugging Face cache and the hub cannot be reached; "
                f"check the network, or download it once while online{_TRY_TINY}")
    if any(isinstance(cause, (ConnectionError, TimeoutError, socket.gaierror)) for cause in _causes(error)):
        return f"the Hugging Face hub cannot be reached to download {repo}; check the network{_TRY_TINY}"
    if isinstance(error, ImportError) and "torchvision" in str(error).lower():
        return (f"the local text encoder of {repo} needs torchvision (its PixtralProcessor); "
                "install the torchvision matching your torch, or use a remote encoder")
    return f"could not load {repo}: {type(error).__name__}; run with FLUX2_DEBUG=1 for details"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it wraps: downloaders and HTTP clients wrap the socket's or the disk's."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _is_disk_full(error: BaseException) -> bool:
    # The text too: an error re-raised by a downloader may keep only the OS's message.
    return any(isinstance(cause, OSError) and (cause.errno == errno.ENOSPC or "No space left" in str(cause))
               for cause in _causes(error))


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _no_token() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is None
    except Exception:  # noqa: BLE001
        return not os.environ.get("HF_TOKEN")
