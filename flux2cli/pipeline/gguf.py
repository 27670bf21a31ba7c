"""GGUF transformers: finding the file, reading what it holds, loading it into diffusers.

A GGUF file holds only the transformer; the rest of the pipeline (VAE, text encoder,
scheduler, and the transformer's ``config.json``) comes from the model's diffusers repo.
Three key layouts are found in the wild and all are accepted:

* diffusers names (``transformer_blocks.0.attn.to_q.weight``), loaded as they are;
* the original BFL names (``double_blocks.0.img_attn.qkv.weight``), which diffusers converts;
* ComfyUI's prefixed BFL names (``model.diffusion_model.double_blocks...``), whose prefix is
  stripped first (diffusers would otherwise fail with a KeyError).

torch, numpy and gguf are imported inside the functions: the registry calls
``describe_gguf_file`` while resolving ``--gguf PATH`` and must stay light otherwise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flux2cli.errors import InvalidRequest, ModelLoadError

GGUF_MAGIC = b"GGUF"
# Prefixes some converters put before the original BFL names.
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Quantization type name -> the registry's quant name whose defaults it shares.
_QUANT_FAMILY = {"F32": "bf16", "F16": "bf16", "BF16": "bf16", "Q8_0": "q8", "Q8_1": "q8", "Q6_K": "q8"}


@dataclass(frozen=True)
class GGUFFileInfo:
    path: Path
    quant_type: str  # the type holding most of the weights, e.g. "Q8_0", "Q4_K", "BF16"
    layout: str  # "diffusers" | "bfl" | "comfy"
    tensor_count: int

    @property
    def label(self) -> str:
        """How /model-info names it: Q8_0 -> Q8, Q4_K -> Q4, BF16 -> BF16."""
        name = self.quant_type
        return name.split("_")[0] if name.startswith(("Q", "IQ")) else name

    @property
    def registry_quant(self) -> str:
        return _QUANT_FAMILY.get(self.quant_type, "q4" if self.quant_type[:2] in ("Q4", "Q3", "Q2", "IQ")
                                 else "q8")


def looks_like_path(value: str) -> bool:
    """``--gguf`` takes bf16|q8|q4 or a file; anything with a suffix or a separator is a file."""
    return value.lower().endswith(".gguf") or "/" in value or "\\" in value or Path(value).suffix != ""


def describe_gguf_file(path: str | Path) -> GGUFFileInfo:
    """Read a GGUF file's tensor table (memory-mapped; the weights are not read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"no GGUF file at {path}; give an existing .gguf file or one of bf16, q8, q4")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise InvalidRequest(f"{path.name} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        from gguf import GGUFReader
    except ImportError as error:
        raise ModelLoadError("GGUF models need the gguf package: pip install 'flux2cli[gguf]'") from error
    try:
        reader = GGUFReader(str(path))
    except Exception as error:
        raise InvalidRequest(f"{path.name} could not be read as GGUF ({type(error).__name__}); "
                             "the file may be truncated") from error
    weights: Counter[str] = Counter()
    names = []
    for tensor in reader.tensors:
        names.append(tensor.name)
        weights[tensor.tensor_type.name] += int(tensor.n_elements)
    if not names:
        raise InvalidRequest(f"{path.name} holds no tensors")
    return GGUFFileInfo(path=path.resolve(), quant_type=weights.most_common(1)[0][0],
                        layout=key_layout(names), tensor_count=len(names))


def key_layout(names: list[str]) -> str:
    if any(name.startswith(KEY_PREFIXES) for name in names):
        return "comfy"
    if any(name.startswith(("double_blocks.", "single_blocks.")) for name in names):
        return "bfl"
    return "diffusers"


def strip_prefixes(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Drop ComfyUI's ``model.diffusion_model.`` (or ``diffusion_model.``) key prefix."""
    stripped = {}
    for key, value in checkpoint.items():
        for prefix in KEY_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        stripped[key] = value
    return stripped


def load_gguf_transformer(path: Path, config_folder: Path, compute_dtype: Any) -> Any:
    """A ``Flux2Transformer2DModel`` with GGUF weights, dequantized on the fly to ``compute_dtype``."""
    from diffusers import Flux2Transformer2DModel, GGUFQuantizationConfig
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    if not (config_folder / "transformer" / "config.json").is_file():
        raise ModelLoadError(f"{config_folder} has no transformer/config.json to build the GGUF transformer from")
    try:
        checkpoint = strip_prefixes(load_gguf_checkpoint(str(path)))
    except ValueError as error:  # an unsupported quantization type
        raise ModelLoadError(f"{path.name}: {str(error).splitlines()[0]}") from error
    try:
        return Flux2Transformer2DModel.from_single_file(
            checkpoint,
            config=str(config_folder),
            subfolder="transformer",
            quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
            torch_dtype=compute_dtype,
        )
    except (KeyError, RuntimeError, ValueError) as error:
        # Missing or mis-shaped weights: a file of another model (klein vs dev, FLUX.1, ...).
        raise ModelLoadError(
            f"{path.name} does not hold a transformer matching {config_folder.name}'s config "
            f"({type(error).__name__}); is it a FLUX.2 file of the same model?") from error
