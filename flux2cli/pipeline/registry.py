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
    """Where a GGUF transformer file lives: a file in a hub repo, or (repo None) a local path."""

    repo: str | None
    filename: str
    size_gb: float | None = None  # download size, for messages and `flux2 info`

    @property
    def is_local(self) -> bool:
        return self.repo is None


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
    memory_gb: float  # rough peak accelerator memory at 1 MP without offloading (remote encoder for [dev])
    description: str
    aliases: tuple[str, ...] = ()
    local_dir: Path | None = None  # a folder shipped with the package
    gguf: GGUFSource | None = None
    size_scale: float = 1.0  # native resolution relative to the spec's 1 MP table
    remote_encoder_capable: bool = False  # [dev] can use the remote text encoder
    encoder_memory_gb: float = 0.0  # what a local text encoder adds to memory_gb ([dev] only)
    download_gb: float | None = None  # rough size of what a run downloads (local encoder included)
    notes: tuple[str, ...] = field(default=())
    # Runs classifier-free guidance (an undistilled model): two transformer passes a step,
    # the second against a negative prompt. Guidance-distilled [dev] embeds its guidance
    # instead and step-distilled [klein] takes none; both would ignore a negative prompt.
    cfg: bool = False

    @property
    def distilled(self) -> bool:
        return self.default_guidance is None

    def dimensions(self, orientation: str, size: str) -> tuple[int, int]:
        """Width and height for an orientation and size, multiples of 16."""
        base_w, base_h = BASE_SIZES[orientation]
        multiplier = SIZE_MULTIPLIERS[size]
        return (_round16(base_w * self.size_scale) * multiplier,
                _round16(base_h * self.size_scale) * multiplier)

    def largest_sizes(self) -> list[tuple[int, int]]:
        """The 4mp size of every orientation: an explicit width x height must fit one of them."""
        return [self.dimensions(orientation, "4mp") for orientation in BASE_SIZES]


def _round16(value: float) -> int:
    return max(16, int(round(value / 16)) * 16)


_DEV_LAYERS = (10, 20, 30)
_KLEIN_LAYERS = (9, 18, 27)
_DEV_LICENSE = "FLUX [dev] Non-Commercial License"
DEV_REPO = "black-forest-labs/FLUX.2-dev"
GGUF_REPO = "city96/FLUX.2-dev-gguf"
# BFL's small decoder (--decoder small): a whole AutoencoderKLFlux2 whose decoder is narrower
# (decoder_block_out_channels), for every FLUX.2 model; loading.py puts it in place of the VAE.
SMALL_DECODER_REPO = "black-forest-labs/FLUX.2-small-decoder"
DECODERS = ("full", "small")


def _dev(name: str, display_name: str, **entry) -> ModelSpec:
    """FLUX.2 [dev] 32B: the spec's 25 steps (10-50), guidance 4, Mistral Small 3.1 encoder."""
    return ModelSpec(**{
        "name": name, "display_name": display_name, "family": "dev", "pipeline_class": "Flux2Pipeline",
        "repo": DEV_REPO, "quantization": "bf16", "default_steps": 25, "step_range": (10, 50),
        "default_guidance": 4.0, "max_sequence_length": 512, "text_encoder_out_layers": _DEV_LAYERS,
        "license": _DEV_LICENSE, "gated": True, "remote_encoder_capable": True,
        "encoder_memory_gb": 48.0,  # the dev repo's bf16 Mistral Small 3.1 24B
        **entry})


def _dev_gguf(quant: str, filename: str, size_gb: float, memory_gb: float) -> ModelSpec:
    return _dev(f"dev-gguf-{quant}", f"FLUX.2-dev GGUF {quant.upper()}",
                gguf=GGUFSource(GGUF_REPO, filename, size_gb), quantization=f"gguf-{quant}", memory_gb=memory_gb,
                description=f"FLUX.2 [dev] 32B, transformer from a GGUF {quant.upper()} file",
                download_gb=float(round(size_gb + 48.5)))


def _klein(name: str, display_name: str, **entry) -> ModelSpec:
    """FLUX.2 [klein]: step-distilled (4 steps, no guidance), Qwen3 encoder, bf16."""
    return ModelSpec(**{
        "name": name, "display_name": display_name, "family": "klein", "pipeline_class": "Flux2KleinPipeline",
        "quantization": "bf16", "default_steps": 4, "step_range": (1, 50), "default_guidance": None,
        "max_sequence_length": 512, "text_encoder_out_layers": _KLEIN_LAYERS, **entry})


def _klein_base(name: str, display_name: str, **entry) -> ModelSpec:
    """FLUX.2 [klein] base: the undistilled checkpoints, ~50 steps of classifier-free guidance at ~4."""
    return _klein(name, display_name, default_steps=50, step_range=(1, 100), default_guidance=4.0, cfg=True,
                  **entry)


MODELS: tuple[ModelSpec, ...] = (
    _dev("dev-bnb4", "FLUX.2-dev-bnb-4bit", repo="diffusers/FLUX.2-dev-bnb-4bit", quantization="bnb-nf4",
         memory_gb=18.0, encoder_memory_gb=14.0, download_gb=33.0, aliases=("dev-4bit", "bnb4"),
         description="FLUX.2 [dev] 32B, NF4 transformer and text encoder (bitsandbytes)"),
    _dev("dev", "FLUX.2-dev (full)", memory_gb=70.0, download_gb=113.0, aliases=("dev-full", "full"),
         description="FLUX.2 [dev] 32B in bf16"),
    # File names and sizes as published in city96/FLUX.2-dev-gguf (see docs/models.md).
    _dev_gguf("bf16", "flux2-dev-BF16.gguf", 64.4, 70.0),
    _dev_gguf("q8", "flux2-dev-Q8_0.gguf", 34.5, 40.0),
    _dev_gguf("q4", "flux2-dev-Q4_K_S.gguf", 19.3, 25.0),
    _klein("klein-4b", "FLUX.2-klein-4B", repo="black-forest-labs/FLUX.2-klein-4B", license="Apache-2.0",
           gated=False, memory_gb=13.0, download_gb=16.0, aliases=("klein", "klein4b"),
           description="FLUX.2 [klein] 4B, step-distilled (4 steps), Qwen3 4B text encoder"),
    _klein("klein-9b", "FLUX.2-klein-9B", repo="black-forest-labs/FLUX.2-klein-9B",
           license="FLUX Non-Commercial License", gated=True, memory_gb=29.0, download_gb=35.0, aliases=("klein9b",),
           description="FLUX.2 [klein] 9B, step-distilled (4 steps), Qwen3 8B text encoder"),
    _klein_base("klein-base-4b", "FLUX.2-klein-base-4B", repo="black-forest-labs/FLUX.2-klein-base-4B",
                license="Apache-2.0", gated=False, memory_gb=13.0, download_gb=16.0, aliases=("klein-base",),
                description="FLUX.2 [klein] 4B base, undistilled (50 steps, CFG, negative prompts), Qwen3 4B encoder"),
    _klein_base("klein-base-9b", "FLUX.2-klein-base-9B", repo="black-forest-labs/FLUX.2-klein-base-9B",
                license="FLUX Non-Commercial License", gated=True, memory_gb=29.0, download_gb=35.0,
                description="FLUX.2 [klein] 9B base, undistilled (50 steps, CFG, negative prompts), Qwen3 8B encoder"),
    # Repo name as diffusers' Flux2KleinKVPipeline example spells it.
    _klein("klein-9b-kv", "FLUX.2-klein-9B-KV", repo="black-forest-labs/FLUX.2-klein-9b-kv",
           pipeline_class="Flux2KleinKVPipeline", license="FLUX Non-Commercial License", gated=True,
           memory_gb=29.0, download_gb=35.0,
           description="FLUX.2 [klein] 9B, step-distilled, reference images' attention cached after the first step"),
    _klein("tiny", "flux2-tiny", family="tiny", repo=None, local_dir=PACKAGE_MODELS / "tiny", quantization="fp32",
           default_steps=8, max_sequence_length=32, license="Apache-2.0", gated=False, memory_gb=0.1,
           description="embedded FLUX.2 [klein]-architecture demo model: coloured shapes, runs on CPU",
           size_scale=1 / 16),
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


def resolve_model(
    model: str | None = None,
    *,
    full_model: bool = False,
    gguf: str | None = None,
    default: str = DEFAULT_MODEL,
) -> ModelSpec:
    """Turn ``--model`` and the spec's shorthands into one registry entry.

    ``default`` is the model when neither names one: front ends pass the user's setting
    (FLUX2_MODEL, config.toml); the registry itself reads no settings.

    The shorthands (``--full-model``, ``--gguf q8``) name [dev] variants; naming them
    together with a different ``--model`` is a contradiction we refuse rather than guess.
    ``--gguf PATH.gguf`` takes the transformer from a local file: the rest of the pipeline
    comes from ``--model`` (any model with a diffusers folder) or, by default, FLUX.2 [dev].
    """
    if full_model and gguf:
        raise UnknownModel("--full-model and --gguf exclude each other; pick one")
    if gguf and _is_gguf_path(gguf):
        return gguf_file_spec(gguf, get_model(model) if model else None)
    if gguf and gguf.lower() not in GGUF_QUANTS:
        raise UnknownModel(f"--gguf takes one of {', '.join(GGUF_QUANTS)} or a .gguf file (got {gguf!r})")
    shorthand = "dev" if full_model else (f"dev-gguf-{gguf.lower()}" if gguf else None)
    if shorthand and model and get_model(model).name != shorthand:
        raise UnknownModel(f"--model {model} contradicts the shorthand for {shorthand}; pick one")
    return get_model(shorthand or model or default)


def _is_gguf_path(value: str) -> bool:
    from flux2cli.pipeline.gguf import looks_like_path

    return looks_like_path(value)


def gguf_file_spec(path: str | os.PathLike[str], base: ModelSpec | None = None) -> ModelSpec:
    """The entry for a local GGUF transformer file on top of ``base``'s pipeline.

    The file's tensor table is read (not its weights) to name the model by what it holds:
    ``FLUX.2-dev GGUF Q8`` for a Q8_0 file. [dev] files take the registry name of the
    nearest published quant (``dev-gguf-q8``), so defaults and metadata stay those of a
    registry entry.
    """
    from dataclasses import replace

    from flux2cli.pipeline.gguf import describe_gguf_file

    info = describe_gguf_file(path)
    if base is None or base.gguf is not None:  # a dev-gguf-* entry: its pipeline comes from the dev repo too
        base = get_model("dev")
    source = GGUFSource(None, str(info.path), round(info.path.stat().st_size / 1024**3, 2))
    if base.family == "dev":
        template = get_model(f"dev-gguf-{info.registry_quant}")
        return replace(template, display_name=f"FLUX.2-dev GGUF {info.label}", gguf=source,
                       description=f"FLUX.2 [dev], transformer from {info.path.name} ({info.quant_type})")
    return replace(base, display_name=f"{base.display_name} GGUF {info.label}", gguf=source,
                   quantization=f"gguf-{info.label.lower()}",
                   description=f"{base.description}; transformer from {info.path.name} ({info.quant_type})")
