"""The one model registry: every default a model has lives in its entry here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from flux2cli.errors import UnknownModel

PACKAGE_MODELS = Path(__file__).resolve().parent.parent / "models"

# The spec's 1 MP table, plus the REPL's 16:9 (all multiples of 16).
BASE_SIZES: dict[str, tuple[int, int]] = {
    "square": (1024, 1024),
    "portrait": (768, 1344),
    "landscape": (1344, 768),
    "16:9": (1360, 768),
}
SIZE_MULTIPLIERS: dict[str, int] = {"1mp": 1, "2mp": 2, "4mp": 4}


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF transformer file lives on the hub."""

    repo: str
    filename: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    display_name: str  # what /model-info calls it
    family: str  # "dev" | "klein" | "tiny"
    pipeline_class: str  # "Flux2Pipeline" | "Flux2KleinPipeline"
    repo: str | None  # hub repo holding the diffusers folder
    quantization: str  # "bnb-nf4" | "bf16" | "gguf-bf16" | "gguf-q8" | "gguf-q4" | "fp32"
    default_steps: int
    step_range: tuple[int, int]
    default_guidance: float | None  # None: a distilled model that takes no guidance
    max_sequence_length: int
    text_encoder_out_layers: tuple[int, ...]
    license: str
    gated: bool
    memory_gb: float  # rough peak accelerator memory at 1 MP without offloading
    description: str
    aliases: tuple[str, ...] = ()
    local_dir: Path | None = None  # a folder shipped with the package
    gguf: GGUFSource | None = None
    size_scale: float = 1.0  # native resolution relative to the spec's 1 MP table
    remote_encoder_capable: bool = False  # [dev] can use the remote text encoder
    notes: tuple[str, ...] = field(default=())

    @property
    def distilled(self) -> bool:
        return self.default_guidance is None

    def dimensions(self, orientation: str, size: str) -> tuple[int, int]:
        """Width and height for an orientation and size, multiples of 16."""
        base_w, base_h = BASE_SIZES[orientation]
        multiplier = SIZE_MULTIPLIERS[size]
        return (_round16(base_w * self.size_scale) * multiplier,
                _round16(base_h * self.size_scale) * multiplier)


def _round16(value: float) -> int:
    return max(16, int(round(value / 16)) * 16)


_DEV_LAYERS = (10, 20, 30)
_KLEIN_LAYERS = (9, 18, 27)
_DEV_LICENSE = "FLUX [dev] Non-Commercial License"


def _dev_gguf(quant: str, filename: str, memory_gb: float) -> ModelSpec:
    return ModelSpec(
        name=f"dev-gguf-{quant}",
        display_name=f"FLUX.2-dev GGUF {quant.upper()}",
        family="dev",
        pipeline_class="Flux2Pipeline",
        repo="black-forest-labs/FLUX.2-dev",
        gguf=GGUFSource("city96/FLUX.2-dev-gguf", filename),
        quantization=f"gguf-{quant}",
        default_steps=25,
        step_range=(10, 50),
        default_guidance=4.0,
        max_sequence_length=512,
        text_encoder_out_layers=_DEV_LAYERS,
        license=_DEV_LICENSE,
        gated=True,
        memory_gb=memory_gb,
        description=f"FLUX.2 [dev] 32B, transformer from a GGUF {quant.upper()} file",
        remote_encoder_capable=True,
    )


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="dev-bnb4",
        display_name="FLUX.2-dev-bnb-4bit",
        family="dev",
        pipeline_class="Flux2Pipeline",
        repo="diffusers/FLUX.2-dev-bnb-4bit",
        quantization="bnb-nf4",
        default_steps=25,
        step_range=(10, 50),
        default_guidance=4.0,
        max_sequence_length=512,
        text_encoder_out_layers=_DEV_LAYERS,
        license=_DEV_LICENSE,
        gated=True,
        memory_gb=20.0,
        description="FLUX.2 [dev] 32B, NF4 transformer and text encoder (bitsandbytes)",
        aliases=("dev-4bit", "bnb4"),
        remote_encoder_capable=True,
    ),
    ModelSpec(
        name="dev",
        display_name="FLUX.2-dev (full)",
        family="dev",
        pipeline_class="Flux2Pipeline",
        repo="black-forest-labs/FLUX.2-dev",
        quantization="bf16",
        default_steps=25,
        step_range=(10, 50),
        default_guidance=4.0,
        max_sequence_length=512,
        text_encoder_out_layers=_DEV_LAYERS,
        license=_DEV_LICENSE,
        gated=True,
        memory_gb=80.0,
        description="FLUX.2 [dev] 32B in bf16",
        aliases=("dev-full", "full"),
        remote_encoder_capable=True,
    ),
    _dev_gguf("bf16", "flux2-dev-BF16.gguf", 80.0),
    _dev_gguf("q8", "flux2-dev-Q8_0.gguf", 45.0),
    _dev_gguf("q4", "flux2-dev-Q4_0.gguf", 30.0),
    ModelSpec(
        name="klein-4b",
        display_name="FLUX.2-klein-4B",
        family="klein",
        pipeline_class="Flux2KleinPipeline",
        repo="black-forest-labs/FLUX.2-klein-4B",
        quantization="bf16",
        default_steps=4,
        step_range=(1, 50),
        default_guidance=None,
        max_sequence_length=512,
        text_encoder_out_layers=_KLEIN_LAYERS,
        license="Apache-2.0",
        gated=False,
        memory_gb=13.0,
        description="FLUX.2 [klein] 4B, step-distilled (4 steps), Qwen3 4B text encoder",
        aliases=("klein", "klein4b"),
    ),
    ModelSpec(
        name="klein-9b",
        display_name="FLUX.2-klein-9B",
        family="klein",
        pipeline_class="Flux2KleinPipeline",
        repo="black-forest-labs/FLUX.2-klein-9B",
        quantization="bf16",
        default_steps=4,
        step_range=(1, 50),
        default_guidance=None,
        max_sequence_length=512,
        text_encoder_out_layers=_KLEIN_LAYERS,
        license="FLUX Non-Commercial License",
        gated=True,
        memory_gb=29.0,
        description="FLUX.2 [klein] 9B, step-distilled (4 steps), Qwen3 8B text encoder",
        aliases=("klein9b",),
    ),
    ModelSpec(
        name="tiny",
        display_name="flux2-tiny",
        family="tiny",
        pipeline_class="Flux2KleinPipeline",
        repo=None,
        local_dir=PACKAGE_MODELS / "tiny",
        quantization="fp32",
        default_steps=8,
        step_range=(1, 50),
        default_guidance=None,
        max_sequence_length=32,
        text_encoder_out_layers=_KLEIN_LAYERS,
        license="Apache-2.0",
        gated=False,
        memory_gb=0.1,
        description="embedded FLUX.2 [klein]-architecture demo model: coloured shapes, runs on CPU",
        size_scale=1 / 16,
    ),
)

GGUF_QUANTS = ("bf16", "q8", "q4")
DEFAULT_MODEL = "dev-bnb4"  # the spec's default: 4-bit [dev]

_BY_NAME: dict[str, ModelSpec] = {}
for _spec in MODELS:
    for _key in (_spec.name, *_spec.aliases):
        _BY_NAME[_key.lower()] = _spec


def get_model(name: str) -> ModelSpec:
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        known = ", ".join(spec.name for spec in MODELS)
        raise UnknownModel(f"unknown model {name!r}; choose one of: {known}") from None


def default_model_name() -> str:
    return os.environ.get("FLUX2_MODEL") or DEFAULT_MODEL


def resolve_model(
    model: str | None = None,
    *,
    full_model: bool = False,
    gguf: str | None = None,
) -> ModelSpec:
    """Turn ``--model`` and the spec's shorthands into one registry entry.

    The shorthands (``--full-model``, ``--gguf q8``) name [dev] variants; naming them
    together with a different ``--model`` is a contradiction we refuse rather than guess.
    """
    if full_model and gguf:
        raise UnknownModel("--full-model and --gguf exclude each other; pick one")
    if gguf and gguf.lower() not in GGUF_QUANTS:
        raise UnknownModel(f"--gguf takes one of {', '.join(GGUF_QUANTS)} (got {gguf!r})")
    shorthand = "dev" if full_model else (f"dev-gguf-{gguf.lower()}" if gguf else None)
    if shorthand and model and get_model(model).name != shorthand:
        raise UnknownModel(f"--model {model} contradicts the shorthand for {shorthand}; pick one")
    return get_model(shorthand or model or default_model_name())
