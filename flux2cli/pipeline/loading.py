"""Turning a registry entry into a ready diffusers pipeline.

Imports of torch and diffusers happen inside the functions: this module is imported by
commands that must start fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flux2cli.errors import ModelLoadError, NotSupportedYet
from flux2cli.pipeline.registry import ModelSpec


@dataclass(frozen=True)
class LoadOptions:
    device: str | None = None  # None: cuda, else mps, else cpu
    local_encoder: bool = False
    compile: bool = False


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_pipeline(spec: ModelSpec, options: LoadOptions) -> tuple[Any, str]:
    """Load ``spec``'s pipeline onto a device; returns (pipeline, device)."""
    if spec.gguf is not None:
        raise NotSupportedYet("GGUF models (--gguf) are not supported yet; use --model dev-bnb4 or --full-model")
    if options.compile:
        raise NotSupportedYet("--compile is not supported yet; run without it")

    import torch
    import diffusers

    _quiet_library_output()
    device = pick_device(options.device)
    pipeline_cls = getattr(diffusers, spec.pipeline_class)
    # fp32 on the CPU: bf16 matmuls there are slow and the tiny model is trained in fp32.
    dtype = torch.bfloat16 if device != "cpu" and spec.quantization != "fp32" else torch.float32
    source = str(spec.local_dir) if spec.local_dir is not None else spec.repo
    if spec.local_dir is not None and not (spec.local_dir / "model_index.json").is_file():
        raise ModelLoadError(f"the embedded model folder {spec.local_dir.name!r} is missing; reinstall flux2cli")
    try:
        pipe = pipeline_cls.from_pretrained(source, torch_dtype=dtype)
    except Exception as error:  # hub and file errors become one actionable line
        raise ModelLoadError(hub_error_message(spec, error)) from error
    if spec.quantization.startswith("bnb"):
        # bitsandbytes weights are placed at load time; .to() on them is refused.
        pipe.vae.to(device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


def _quiet_library_output() -> None:
    """Hide per-component loading bars and deprecation chatter; hub download bars stay."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)


def hub_error_message(spec: ModelSpec, error: Exception) -> str:
    """One line naming the repo and the fix, for the usual hub failures."""
    name = type(error).__name__
    repo = spec.repo or str(spec.local_dir)
    text = str(error)
    if name == "GatedRepoError" or "gated" in text.lower():
        return (f"{repo} is gated: accept its licence at https://huggingface.co/{repo} "
                "and log in with `hf auth login` (or set HF_TOKEN)")
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        return f"{repo} was not found on the Hugging Face hub, or your token cannot see it (`hf auth login`)"
    if "401" in text or "token" in text.lower() and "invalid" in text.lower():
        return f"your Hugging Face token was refused for {repo}; run `hf auth login` or set HF_TOKEN"
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled") or "offline" in text.lower():
        return (f"{repo} is not in the local cache and the hub cannot be reached "
                "(HF_HUB_OFFLINE is set or there is no network); download it once while online")
    if isinstance(error, OSError) and getattr(error, "errno", None) == 28:
        return f"not enough disk space to download {repo}; free space or set HF_HOME to a larger disk"
    return f"could not load {repo}: {name}; run with FLUX2_DEBUG=1 for details"
