"""Tiny stand-ins for the real FLUX.2 repositories, laid out exactly as on the hub.

Every builder makes seeded random weights in seconds; nothing here is trained or
downloaded. The layouts follow the real repositories:

* ``black-forest-labs/FLUX.2-dev``: a ``Flux2Pipeline`` folder (Mistral3 text encoder,
  guidance-embedded transformer). The real tokenizer is a ``PixtralProcessor``, which needs
  torchvision; the stand-in uses a plain fast tokenizer with a Mistral-style chat template
  over list-of-parts content, which is all ``Flux2Pipeline`` asks of it.
* ``diffusers/FLUX.2-dev-bnb-4bit``: the same pipeline with the transformer and the text
  encoder quantized to bitsandbytes NF4 and saved (``quantization_config`` in their
  ``config.json``), the VAE unquantized.
* ``city96/FLUX.2-dev-gguf``: single GGUF files of the transformer, written with the
  ``gguf`` package in the three key layouts found in the wild.
* ``black-forest-labs/FLUX.2-klein-4B`` / ``-9B``: a ``Flux2KleinPipeline`` folder with a
  Qwen3 text encoder.
* ``black-forest-labs/FLUX.2-klein-base-4B`` / ``-base-9B``: the same layout, saved with
  ``is_distilled: false`` in ``model_index.json`` (the undistilled models run CFG).
* ``black-forest-labs/FLUX.2-klein-9b-kv``: the same components under a
  ``Flux2KleinKVPipeline`` index.

``install_in_hf_cache`` puts a folder into a Hugging Face cache (``models--org--name``,
``snapshots/<commit>``, ``refs/main``) so the registry entries resolve through the real
hub code path with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

DEV_MAX_SEQUENCE_LENGTH = 512  # the registry's value for [dev]; stand-ins use the real one
TEXT_HIDDEN = 32
# in_features 96 (= 3 x 32) is deliberately not a multiple of 64: bitsandbytes' CPU fast
# path breaks on such layers, and the loading code must cope with it.
JOINT_ATTENTION_DIM = 3 * TEXT_HIDDEN

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    mid_block_add_attention=False,
    batch_norm_eps=1e-4,
    batch_norm_momentum=0.1,
    patch_size=(2, 2),
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    time_shift_type="exponential",
)

# Renders both the klein call (string content, generation prompt, thinking off) and the
# [dev] call (system + user messages whose content is a list of text parts).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set content = message['content'] %}"
    "{%- else %}{%- set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') %}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

_WORDS = ("a an on the of with red green blue yellow orange purple white black circle square "
          "triangle background cat dog photo painting mountain sunset lake sky tree house").split()

# Repositories of the registry, as the stand-ins install them.
DEV_REPO = "black-forest-labs/FLUX.2-dev"
BNB_REPO = "diffusers/FLUX.2-dev-bnb-4bit"
GGUF_REPO = "city96/FLUX.2-dev-gguf"
KLEIN_4B_REPO = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_BASE_4B_REPO = "black-forest-labs/FLUX.2-klein-base-4B"
KLEIN_BASE_9B_REPO = "black-forest-labs/FLUX.2-klein-base-9B"
KLEIN_9B_KV_REPO = "black-forest-labs/FLUX.2-klein-9b-kv"
SMALL_DECODER_REPO = "black-forest-labs/FLUX.2-small-decoder"
SMALL_DECODER_CHANNELS = (8, 16, 16)  # the real one narrows (128, 256, 512, 512) to (96, 192, 384, 384)


# --------------------------------------------------------------------------- components


def build_tokenizer():
    """A byte-level BPE tokenizer (any text encodes) wrapped as ``Qwen2TokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(_WORDS)] * 8 + [f"a {w} on a {v} background" for w in _WORDS for v in _WORDS[:8]]
    corpus += ["user\n", "assistant\n", "system\n", "\n\n"] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    state = json.loads(tok.to_str())
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["model"]["merges"]]
    hf = Qwen2TokenizerFast(vocab=state["model"]["vocab"], merges=merges, model_max_length=1024,
                            unk_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    hf.add_tokens(["<think>", "</think>"])
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "right"
    return hf


def _unit_embeddings(model, seed: int) -> None:
    """Unit-variance token embeddings, so the stacked hidden states depend on the prompt."""
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(seed)))


def build_qwen3(vocab_size: int, seed: int = 1):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64,
                         num_hidden_layers=28, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=1024, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(config).eval()
    _unit_embeddings(model, seed)
    return model


def build_mistral3(vocab_size: int, seed: int = 2):
    """``Mistral3ForConditionalGeneration`` with 31 text layers ([dev] stacks 10, 20, 30)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    torch.manual_seed(seed)
    text = MistralConfig(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64,
                         num_hidden_layers=31, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=1024, tie_word_embeddings=False)
    vision = PixtralVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=1, head_dim=16, image_size=32, patch_size=8)
    config = Mistral3Config(text_config=text, vision_config=vision, image_token_index=vocab_size - 1,
                            spatial_merge_size=2, vision_feature_layer=-1)
    model = Mistral3ForConditionalGeneration(config).eval()
    _unit_embeddings(model, seed)
    return model


def build_vae(seed: int = 3):
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(**VAE_CONFIG).eval()
    # Gentle random latents statistics, so that decoded images are not saturated noise.
    with torch.no_grad():
        vae.bn.running_mean.zero_()
        vae.bn.running_var.fill_(1.0)
    return vae


def build_transformer(*, guidance_embeds: bool, seed: int = 4):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * VAE_CONFIG["latent_channels"], out_channels=None,
        num_layers=1, num_single_layers=2, attention_head_dim=32, num_attention_heads=2,
        joint_attention_dim=JOINT_ATTENTION_DIM, timestep_guidance_channels=64, mlp_ratio=3.0,
        axes_dims_rope=(8, 8, 8, 8), rope_theta=2000, eps=1e-6, guidance_embeds=guidance_embeds,
    ).eval()


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


# --------------------------------------------------------------------------- folders


def build_dev_folder(out: Path) -> Path:
    """A ``Flux2Pipeline`` folder in the layout of ``black-forest-labs/FLUX.2-dev``."""
    from diffusers import Flux2Pipeline

    tokenizer = build_tokenizer()
    pipe = Flux2Pipeline(scheduler=build_scheduler(), vae=build_vae(), tokenizer=tokenizer,
                         text_encoder=build_mistral3(len(tokenizer)),
                         transformer=build_transformer(guidance_embeds=True))
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_klein_folder(out: Path, *, distilled: bool = True, pipeline: str = "Flux2KleinPipeline") -> Path:
    """A ``Flux2KleinPipeline`` folder in the layout of ``black-forest-labs/FLUX.2-klein-4B``;
    ``distilled=False`` is the base models' layout, ``pipeline="Flux2KleinKVPipeline"`` the KV one's."""
    import diffusers

    tokenizer = build_tokenizer()
    pipe = getattr(diffusers, pipeline)(scheduler=build_scheduler(), vae=build_vae(), tokenizer=tokenizer,
                                        text_encoder=build_qwen3(len(tokenizer)),
                                        transformer=build_transformer(guidance_embeds=False), is_distilled=distilled)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_small_decoder_folder(klein_folder: Path, out: Path) -> Path:
    """``black-forest-labs/FLUX.2-small-decoder``'s layout: one ``AutoencoderKLFlux2`` at the repo
    root (config.json with decoder_block_out_channels, diffusion_pytorch_model.safetensors),
    with the klein stand-in's encoder and a narrower random decoder."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(5)
    small = AutoencoderKLFlux2(**VAE_CONFIG, decoder_block_out_channels=SMALL_DECODER_CHANNELS).eval()
    full = AutoencoderKLFlux2.from_pretrained(klein_folder / "vae")
    shared = {k: v for k, v in full.state_dict().items() if not k.startswith(("decoder.", "post_quant_conv."))}
    small.load_state_dict(shared, strict=False)
    small.save_pretrained(out, safe_serialization=True)
    return out


@contextmanager
def _bnb_without_gpu():
    """Let diffusers' bitsandbytes quantizer run on a CPU-only machine (for building only)."""
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import BnB4BitDiffusersQuantizer

    original = BnB4BitDiffusersQuantizer.validate_environment
    BnB4BitDiffusersQuantizer.validate_environment = lambda self, *a, **k: None
    try:
        yield
    finally:
        BnB4BitDiffusersQuantizer.validate_environment = original


def build_bnb_folder(dev_folder: Path, out: Path) -> Path:
    """Quantize the [dev] stand-in's transformer and text encoder to NF4 and save them.

    This is how ``diffusers/FLUX.2-dev-bnb-4bit`` was made: NF4, bf16 compute, no double
    quantization, the VAE left as it was.
    """
    from diffusers import BitsAndBytesConfig as DiffusersBnbConfig
    from diffusers import Flux2Transformer2DModel
    from transformers import BitsAndBytesConfig, Mistral3ForConditionalGeneration

    shutil.copytree(dev_folder, out)
    for part in ("transformer", "text_encoder"):
        shutil.rmtree(out / part)
    with _bnb_without_gpu():
        transformer = Flux2Transformer2DModel.from_pretrained(
            dev_folder, subfolder="transformer", device_map="cpu",
            quantization_config=DiffusersBnbConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_compute_dtype=torch.bfloat16))
        transformer.save_pretrained(out / "transformer")
    text_encoder = Mistral3ForConditionalGeneration.from_pretrained(
        dev_folder, subfolder="text_encoder", device_map="cpu",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_compute_dtype=torch.bfloat16))
    text_encoder.save_pretrained(out / "text_encoder")
    return out


# --------------------------------------------------------------------------- GGUF files

GGUF_TYPES = ("F16", "BF16", "Q8_0", "Q4_0")
KEY_LAYOUTS = ("diffusers", "bfl", "comfy")


def diffusers_to_bfl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of diffusers' FLUX.2 key conversion: original BFL checkpoint names."""
    renames = {
        "x_embedder": "img_in", "context_embedder": "txt_in",
        "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
        "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
        "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
        "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
        "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
        "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
        "single_stream_modulation.linear": "single_stream_modulation.lin",
        "proj_out": "final_layer.linear",
    }
    double = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
              "attn.to_out.0": "img_attn.proj", "ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2",
              "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm",
              "attn.to_add_out": "txt_attn.proj", "ff_context.linear_in": "txt_mlp.0",
              "ff_context.linear_out": "txt_mlp.2"}
    single = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2",
              "attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"}
    out: dict[str, torch.Tensor] = {}
    state = dict(state)
    for key in list(state):
        if not key.startswith("transformer_blocks."):
            continue
        _, index, rest = key.split(".", 2)
        within, param = rest.rsplit(".", 1)
        if within in ("attn.to_q", "attn.add_q_proj"):
            stream = "img" if within == "attn.to_q" else "txt"
            k_name, v_name = (("attn.to_k", "attn.to_v") if stream == "img"
                              else ("attn.add_k_proj", "attn.add_v_proj"))
            fused = torch.cat([state[key], state[f"transformer_blocks.{index}.{k_name}.{param}"],
                               state[f"transformer_blocks.{index}.{v_name}.{param}"]])
            out[f"double_blocks.{index}.{stream}_attn.qkv.{param}"] = fused
        elif within in ("attn.to_k", "attn.to_v", "attn.add_k_proj", "attn.add_v_proj"):
            continue
        else:
            param = "scale" if "norm" in within else param
            out[f"double_blocks.{index}.{double[within]}.{param}"] = state[key]
    for key, value in state.items():
        if key.startswith("transformer_blocks."):
            continue
        if key.startswith("single_transformer_blocks."):
            _, index, rest = key.split(".", 2)
            within, param = rest.rsplit(".", 1)
            param = "scale" if "norm" in within else param
            out[f"single_blocks.{index}.{single[within]}.{param}"] = value
        elif key.startswith("norm_out.linear."):
            scale, shift = value.chunk(2, dim=0)  # diffusers (scale, shift) -> BFL (shift, scale)
            out["final_layer.adaLN_modulation.1." + key.rsplit(".", 1)[1]] = torch.cat([shift, scale])
        else:
            new = key
            for old, replacement in renames.items():
                new = new.replace(old, replacement)
            out[new] = value
    return out


def write_gguf(state: dict[str, torch.Tensor], path: Path, qtype: str, layout: str = "diffusers") -> Path:
    """Write a transformer state dict as a GGUF file, the way city96's converter does.

    2-D weights whose rows fit the block size are quantized to ``qtype``; biases and norms
    stay F32 (F16 in an F16 file), as in the published files.
    """
    import gguf
    import numpy as np

    if layout in ("bfl", "comfy"):
        state = diffusers_to_bfl(state)
    if layout == "comfy":
        state = {f"model.diffusion_model.{k}": v for k, v in state.items()}
    quant = gguf.GGMLQuantizationType[qtype]
    block, _ = gguf.GGML_QUANT_SIZES[quant]
    writer = gguf.GGUFWriter(str(path), arch="flux")
    writer.add_file_type({"F16": 1, "BF16": 32, "Q8_0": 7, "Q4_0": 2}[qtype])
    for name, tensor in state.items():
        data = tensor.detach().float().numpy()
        if data.ndim >= 2 and data.shape[-1] % block == 0:
            target = quant
        else:
            target = gguf.GGMLQuantizationType.F16 if qtype == "F16" else gguf.GGMLQuantizationType.F32
        if target == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data.astype(np.float32))
        elif target == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            packed = gguf.quants.quantize(data, target)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def transformer_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


# --------------------------------------------------------------------------- HF cache


def commit_hash(repo: str) -> str:
    return hashlib.sha1(repo.encode()).hexdigest()


def install_in_hf_cache(cache: Path, repo: str, source: Path | dict[str, Path]) -> Path:
    """Place ``source`` (a folder, or {path in repo: file}) as ``repo``'s main snapshot.

    The layout is the one huggingface_hub writes (blobs, snapshot symlinks, refs/main),
    so ``snapshot_download``/``hf_hub_download`` with ``HF_HUB_OFFLINE=1`` find it.
    """
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    revision = commit_hash(repo)
    snapshot = repo_dir / "snapshots" / revision
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    files = ({p.relative_to(source).as_posix(): p for p in sorted(source.rglob("*")) if p.is_file()}
             if isinstance(source, Path) else dict(source))
    for relative, path in files.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(*[".."] * (len(Path(relative).parts) + 1), "blobs", digest))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


# --------------------------------------------------------------------------- a whole session's set

STANDINS_VERSION = "3"  # bump when a builder changes, so cached sets are rebuilt


class StandIns:
    """Everything built once per test session under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.dev = root / "dev"
        self.klein = root / "klein"
        self.klein_base = root / "klein-base"
        self.klein_kv = root / "klein-kv"
        self.small_decoder = root / "small-decoder"
        self.bnb = root / "bnb"
        self.gguf_dir = root / "gguf"
        self.cache = root / "hub"

    def gguf(self, qtype: str, layout: str = "diffusers") -> Path:
        return self.gguf_dir / f"flux2-dev-{qtype}-{layout}.gguf"

    def use_cache(self, monkeypatch) -> Path:
        """Point HF_HUB_CACHE (offline) at the session's populated cache."""
        monkeypatch.setenv("HF_HUB_CACHE", str(self.cache))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        return self.cache


def prepare(root: Path) -> StandIns:
    """Build (or reuse) the stand-in folders, GGUF files and the populated HF cache."""
    s = StandIns(root)
    marker = root / f".complete-v{STANDINS_VERSION}"
    if marker.exists():
        return s
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    build_dev_folder(s.dev)
    build_klein_folder(s.klein)
    build_klein_folder(s.klein_base, distilled=False)
    build_klein_folder(s.klein_kv, pipeline="Flux2KleinKVPipeline")
    build_small_decoder_folder(s.klein, s.small_decoder)
    build_bnb_folder(s.dev, s.bnb)
    s.gguf_dir.mkdir()
    state = transformer_state(s.dev)
    for qtype in GGUF_TYPES:
        for layout in KEY_LAYOUTS:
            write_gguf(state, s.gguf(qtype, layout), qtype, layout)
    install_in_hf_cache(s.cache, DEV_REPO, s.dev)
    install_in_hf_cache(s.cache, BNB_REPO, s.bnb)
    install_in_hf_cache(s.cache, KLEIN_4B_REPO, s.klein)
    install_in_hf_cache(s.cache, KLEIN_BASE_4B_REPO, s.klein_base)
    install_in_hf_cache(s.cache, KLEIN_BASE_9B_REPO, s.klein_base)
    install_in_hf_cache(s.cache, KLEIN_9B_KV_REPO, s.klein_kv)
    install_in_hf_cache(s.cache, SMALL_DECODER_REPO, s.small_decoder)
    # The registry's file names, with files gguf-py can write (it writes no K-quants:
    # the q4 entry's Q4_K_S name holds a Q4_0 file here).
    install_in_hf_cache(s.cache, GGUF_REPO, {"flux2-dev-Q8_0.gguf": s.gguf("Q8_0", "comfy"),
                                             "flux2-dev-Q4_K_S.gguf": s.gguf("Q4_0", "comfy")})
    marker.touch()
    return s


def session_standins(tmp_path_factory) -> StandIns:
    """For a session-scoped fixture: one build per session, shared by every test module.

    Session fixtures are set up before conftest's per-test environment, and the first
    import of huggingface_hub (through diffusers) fixes its offline mode for the process:
    so the build itself runs offline.
    """
    import os

    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with one_torch_thread():
            return prepare(tmp_path_factory.getbasetemp() / f"standins-v{STANDINS_VERSION}")
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


# --------------------------------------------------------------------------- test helpers


def flux2_command() -> str:
    import sys

    found = shutil.which("flux2", path=str(Path(sys.executable).parent)) or shutil.which("flux2")
    assert found, "flux2 is not on PATH: install the package (pip install -e .)"
    return found


# The stand-ins are so small that two OpenMP threads mostly wait on each other, and on a
# busy 2-core machine they wait a lot (measured: 30x slower than one thread).
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_flux2(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the installed console script as a user would (the test's environment, plus ``env``)."""
    import os
    import subprocess

    return subprocess.run([flux2_command(), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ONE_THREAD_ENV, **(env or {})})


@contextmanager
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def pixels(image):
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.float32)


def mean_abs_diff(a, b) -> float:
    return float(abs(pixels(a) - pixels(b)).mean())


class FixedEncoder:
    """A TextEncoder answering precomputed embeddings (keeps in-process tests from re-encoding)."""

    name = "local encoder"

    def __init__(self, embeds):
        self.embeds = embeds

    def encode(self, key):
        return self.embeds


class ThreadedServer:
    """An aiohttp app on 127.0.0.1 in a background thread (for clients in this process or others)."""

    def __init__(self, app):
        import asyncio
        import threading

        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import asyncio

        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def url(self, path: str = "/predict") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "ThreadedServer":
        self._thread.start()
        assert self._ready.wait(30), "the test server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
