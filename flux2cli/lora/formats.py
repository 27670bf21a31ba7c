"""Every shared FLUX.2 LoRA format, read into one PEFT layout for diffusers' transformer.

The layout is diffusers' own: ``{module}.lora_A.weight`` / ``{module}.lora_B.weight`` (or
``{module}.lokr_w1``... for LoKr) named after ``Flux2Transformer2DModel``'s modules, with
any alpha baked into the weights, so PEFT's scaling is 1 and a request's scale is the only
one. Diffusers' ``lora_conversion_utils`` already converts kohya, BFL/ai-toolkit (and fal,
which is BFL names under PEFT's ``base_model.model.`` prefix) and LyCORIS/BFL LoKr for
FLUX.2; we reuse those functions and add what they lack for a tool people hand arbitrary
files: keys they cannot place are counted instead of raising or being logged away, alpha
keys next to BFL LoRA weights are baked, diffusers files keep their stored alpha, kohya-named
LoKr files are read, and a file for another model family is named before anything loads.

LoKr goes through PEFT's LoKr layers (diffusers builds the ``LoKrConfig``): the Kronecker
factors stay small and unmerged, so LoKr adapters stack, scale and unload like LoRAs;
expanding them to a dense delta would cost a full weight matrix per layer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux2cli.errors import InvalidRequest

LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")
LOKR_SUFFIXES = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
# Hidden sizes (heads x 128) of the FLUX.2 transformers, to name what a file was made for.
HIDDEN_SIZES = {3072: "FLUX.2 [klein] 4B", 4096: "FLUX.2 [klein] 9B", 6144: "FLUX.2 [dev]", 128: "flux2 tiny"}
# Module names that exist only in other families' networks.
_SD_MARKERS = ("down_blocks", "up_blocks", "mid_block", "input_blocks", "output_blocks", "middle_block",
               "lora_te1_", "lora_te2_", "text_encoder_2", "lora_unet_down", "lora_unet_up", "lora_unet_mid")
_FLUX1_MARKERS = ("img_mod.lin", "img_mod_lin", "txt_mod.lin", "txt_mod_lin", "modulation.lin", "modulation_lin",
                  "ff.net.0.proj", "ff_net_0_proj", "norm1.linear", "norm1_linear", "proj_mlp", "norm1_context")
_BFL_ROOTS = ("double_blocks.", "single_blocks.", "img_in.", "txt_in.", "time_in.", "guidance_in.", "final_layer.",
              "single_stream_modulation.", "double_stream_modulation_img.", "double_stream_modulation_txt.")
_BFL_DOUBLE = ("img_attn.qkv", "txt_attn.qkv", "img_attn.proj", "txt_attn.proj", "img_mlp.0", "img_mlp.2",
               "txt_mlp.0", "txt_mlp.2")
_BFL_SINGLE = ("linear1", "linear2")
_BFL_EXTRA = ("img_in", "txt_in", "time_in.in_layer", "time_in.out_layer", "guidance_in.in_layer",
              "guidance_in.out_layer", "final_layer.linear", "final_layer.adaLN_modulation.1",
              "single_stream_modulation.lin", "double_stream_modulation_img.lin", "double_stream_modulation_txt.lin")
_DIFFUSERS_ROOTS = ("transformer_blocks.", "single_transformer_blocks.", "x_embedder", "context_embedder",
                    "time_guidance_embed.", "proj_out", "norm_out.", "single_stream_modulation.",
                    "double_stream_modulation_img.", "double_stream_modulation_txt.")


@dataclass
class Converted:
    format: str  # diffusers | kohya | bfl | fal | lycoris | ... (+ "-lokr")
    kind: str  # lora | lokr
    tensors: dict[str, Any]  # the PEFT layout, module names without the "transformer." prefix
    unmatched: list[str] = field(default_factory=list)  # keys of the file that place nowhere


# -- reading keys (no torch) -------------------------------------------------------------

def _strip(key: str) -> str:
    for prefix in ("model.diffusion_model.", "base_model.model.", "diffusion_model.", "transformer."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def detect_format(keys: list[str] | tuple[str, ...]) -> str:
    """The format a file's keys are in; "unknown" when none fits."""
    keys = [k for k in keys if k != "__metadata__"]
    lokr = any(".lokr_" in k for k in keys)
    suffix = "-lokr" if lokr else ""
    if any(k.startswith("lycoris_") for k in keys):
        return "lycoris" + suffix
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return "kohya" + suffix
    if any(k.startswith("base_model.model.") for k in keys):
        inner = [_strip(k) for k in keys]
        return ("fal" if any(k.startswith(_BFL_ROOTS) for k in inner) else "peft") + suffix
    if any(k.startswith(("diffusion_model.", "model.diffusion_model.")) for k in keys):
        inner = [_strip(k) for k in keys]
        return ("bfl" if any(k.startswith(_BFL_ROOTS) for k in inner) else "diffusers") + suffix
    if any(_strip(k).startswith(_DIFFUSERS_ROOTS) for k in keys):
        return "diffusers" + suffix
    if any(k.startswith(_BFL_ROOTS) for k in keys):
        return "bfl" + suffix
    return "unknown"


def foreign_family(keys: list[str] | tuple[str, ...]) -> str | None:
    """The family a file is for when its module names say it is not FLUX.2."""
    joined = "\n".join(keys)
    if any(marker in joined for marker in _SD_MARKERS):
        if any(marker in joined for marker in ("lora_te2_", "text_encoder_2", "conditioner.embedders.1")):
            return "SDXL"
        return "Stable Diffusion (a UNet model such as SD 1.5 or SDXL)"
    if any(marker in joined for marker in _FLUX1_MARKERS):
        return "FLUX.1"
    return None


def _in_dim(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]]) -> int | None:
    if key.endswith((".lora_A.weight", ".lora_down.weight", ".lora_A.default.weight")) and len(shape) == 2:
        return shape[1]
    if key.endswith((".lokr_w1", ".lokr_w1_b")) and len(shape) == 2:
        module = key.rsplit(".", 1)[0]
        w2 = shapes.get(f"{module}.lokr_w2") or shapes.get(f"{module}.lokr_w2_b")
        return shape[1] * w2[1] if w2 and len(w2) == 2 else None
    return None


# Layers whose input is the hidden state, in every naming: the hidden size of the file.
_HIDDEN_INPUTS = re.compile(r"(attn[._]to_q|attn[._]to_k|attn[._]to_v|add_[qkv]_proj|to_qkv|attn[._]qkv|linear1|"
                            r"mlp[._]0|linear_in|to_out[._]0\b)")


def hidden_size(shapes: dict[str, tuple[int, ...]]) -> int | None:
    dims = Counter(dim for key, shape in shapes.items() if _HIDDEN_INPUTS.search(key)
                   for dim in [_in_dim(key, shape, shapes)] if dim)
    return dims.most_common(1)[0][0] if dims else None


def family_for(shapes: dict[str, tuple[int, ...]]) -> str:
    foreign = foreign_family(list(shapes))
    if foreign:
        return foreign
    hidden = hidden_size(shapes)
    if hidden is None:
        return "unknown"
    return HIDDEN_SIZES.get(hidden, f"a FLUX.2-style transformer with hidden size {hidden}")


def describe_keys(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """What ``GET /loras`` and ``flux2 info`` show of a file: format, family, rank."""
    ranks = Counter(shape[0] for key, shape in shapes.items()
                    if key.endswith((".lora_A.weight", ".lora_down.weight", ".lora_A.default.weight")) and shape)
    ranks.update(shape[1] for key, shape in shapes.items() if key.endswith(".lokr_w2_a") and len(shape) == 2)
    fmt = detect_format(list(shapes))
    return {"family": family_for(shapes), "format": fmt,
            "rank": ranks.most_common(1)[0][0] if ranks else ("full" if fmt.endswith("-lokr") else None)}


# -- converting (torch tensors) --------------------------------------------------------------

def load_file(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InvalidRequest(f"{path.name} is not a readable safetensors file ({type(error).__name__})") from None


def convert(state_dict: dict[str, Any], metadata: dict[str, str] | None = None) -> Converted:
    """Any supported format -> ``Converted`` (PEFT layout + the keys that place nowhere)."""
    fmt = detect_format(list(state_dict))
    if fmt == "unknown":
        return Converted(fmt, "lora", {}, sorted(state_dict))
    sd = {k.replace(".default.weight", ".weight"): v for k, v in state_dict.items()}
    if fmt.endswith("-lokr"):
        tensors, unmatched = _lokr(fmt, sd)
        return Converted(fmt, "lokr", tensors, unmatched)
    if fmt == "kohya":
        from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux2_lora_to_diffusers

        rest = dict(sd)  # the converter pops what it places and leaves the rest
        tensors = _convert_kohya_flux2_lora_to_diffusers(rest)
        return Converted(fmt, "lora", _unprefixed(tensors), sorted(rest))
    if fmt in ("bfl", "fal"):
        inner = {_strip(k).replace("lora_down", "lora_A").replace("lora_up", "lora_B"): v for k, v in sd.items()}
        _bake_alpha(inner)
        known, unmatched = _partition(inner, _bfl_module_known)
        from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_flux2_lora_to_diffusers

        tensors = _convert_non_diffusers_flux2_lora_to_diffusers({f"diffusion_model.{k}": v for k, v in known.items()})
        return Converted(fmt, "lora", _unprefixed(tensors), unmatched)
    inner = {_strip(k).replace("lora_down", "lora_A").replace("lora_up", "lora_B"): v for k, v in sd.items()}
    _bake_alpha(inner)
    _bake_metadata_alpha(inner, metadata or {})
    known, unmatched = _partition(inner, lambda module: module.startswith(_DIFFUSERS_ROOTS))
    return Converted(fmt, "lora", known, unmatched)


def _unprefixed(tensors: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("transformer."): v for k, v in tensors.items()}


def _module_of(key: str) -> str:
    for marker in (".lora_A.", ".lora_B.", ".lokr_"):
        if marker in key:
            return key.split(marker, 1)[0]
    return key.rsplit(".", 1)[0] if key.endswith(".alpha") else key


def _partition(sd: dict[str, Any], known_module) -> tuple[dict[str, Any], list[str]]:
    known, unmatched = {}, []
    for key, value in sd.items():
        is_weight = key.endswith(LORA_SUFFIXES) or ".lokr_" in key
        if is_weight and known_module(_module_of(key)):
            known[key] = value
        else:
            unmatched.append(key)
    return known, sorted(unmatched)


def _bfl_module_known(module: str) -> bool:
    parts = module.split(".")
    if module.startswith(("transformer_blocks.", "single_transformer_blocks.", "sformer_blocks.")):
        return True
    if parts[0] == "double_blocks" and len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[2:]) in _BFL_DOUBLE
    if parts[0] == "single_blocks" and len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[2:]) in _BFL_SINGLE
    return module in _BFL_EXTRA


def _bake_alpha(sd: dict[str, Any]) -> None:
    """Kohya-style ``alpha`` keys next to lora_A/lora_B: scale A by alpha / rank, drop the key."""
    for key in [k for k in sd if k.endswith(".alpha")]:
        module = key[: -len(".alpha")]
        down = sd.get(f"{module}.lora_A.weight")
        if down is None:
            continue  # a LoKr alpha, or an orphan: left for the partition to count
        alpha = float(sd.pop(key))
        sd[f"{module}.lora_A.weight"] = down * (alpha / down.shape[0])


def _bake_metadata_alpha(sd: dict[str, Any], metadata: dict[str, str]) -> None:
    """diffusers' save_lora_weights stores the PEFT config (lora_alpha, r) in the header."""
    try:
        config = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    except ValueError:
        return
    config = {k.removeprefix("transformer."): v for k, v in config.items()}
    alpha, rank = config.get("lora_alpha"), config.get("r")
    if not alpha or not rank:
        return
    alpha_pattern, rank_pattern = config.get("alpha_pattern") or {}, config.get("rank_pattern") or {}
    for key in [k for k in sd if k.endswith(".lora_A.weight")]:
        module = key[: -len(".lora_A.weight")]
        a = next((v for p, v in alpha_pattern.items() if module.endswith(p)), alpha)
        r = next((v for p, v in rank_pattern.items() if module.endswith(p)), rank)
        if a != r:
            sd[key] = sd[key] * (a / r)


# kohya's underscore names of the BFL modules, for LoKr files (diffusers reads kohya LoRA only)
def _kohya_to_bfl(module: str) -> str | None:
    name = module.removeprefix("lora_unet_")
    match = re.fullmatch(r"(double|single)_blocks_(\d+)_(.+)", name)
    if match:
        kind, index, rest = match.groups()
        table = _BFL_DOUBLE if kind == "double" else _BFL_SINGLE
        for sub in table:
            if sub.replace(".", "_") == rest:
                return f"{kind}_blocks.{index}.{sub}"
        return None
    for sub in _BFL_EXTRA:
        if sub.replace(".", "_") == name:
            return sub
    return None


_LYCORIS_TOP = {name.replace(".", "_"): name for name in (
    "context_embedder", "x_embedder", "proj_out", "norm_out.linear", "single_stream_modulation.linear",
    "double_stream_modulation_img.linear", "double_stream_modulation_txt.linear",
    "time_guidance_embed.timestep_embedder.linear_1", "time_guidance_embed.timestep_embedder.linear_2")}


def _lokr(fmt: str, sd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    from diffusers.loaders import lora_conversion_utils as conv

    if fmt == "lycoris-lokr":
        sd = dict(sd)
        conv._bake_lokr_alpha_(sd)  # here, for the layers outside the blocks too
        pattern = re.compile(r"^lycoris_((?:single_)?transformer_blocks)_(\d+)_(.+)\.(.+)$")

        def known(key: str) -> bool:
            match = pattern.match(key)
            return bool(match) and match.group(3) in conv._LYCORIS_FLUX2_SUBPATH_MAP

        keep = {k: v for k, v in sd.items() if known(k)}
        tensors = _unprefixed(conv._convert_lycoris_flux2_lokr_to_diffusers(keep))
        # diffusers maps the blocks only; the layers outside them keep one underscore name each
        for key, value in sd.items():
            module, _, suffix = key.partition(".")
            top = _LYCORIS_TOP.get(module.removeprefix("lycoris_"))
            if key not in keep and top and suffix in LOKR_SUFFIXES:
                tensors[f"{top}.{suffix}"] = value
                keep[key] = value
        return tensors, sorted(set(sd) - set(keep))
    if fmt == "kohya-lokr":
        renamed, unmatched = {}, []
        for key, value in sd.items():
            module, _, suffix = key.partition(".")
            bfl = _kohya_to_bfl(module)
            if bfl is None:
                unmatched.append(key)
            else:
                renamed[f"{bfl}.{suffix}"] = value
        sd, fmt = renamed, "bfl-lokr"
    else:
        unmatched = []
    inner = {_strip(k): v for k, v in sd.items()}
    if fmt in ("bfl-lokr", "fal-lokr"):
        lokr_ok = lambda m: _bfl_module_known(m)  # noqa: E731
        known, more = _partition({k: v for k, v in inner.items() if not k.endswith(".alpha")}, lokr_ok)
        alphas = {k: v for k, v in inner.items() if k.endswith(".alpha") and lokr_ok(k[: -len(".alpha")])}
        tensors = conv._convert_non_diffusers_flux2_lokr_to_diffusers(
            {f"diffusion_model.{k}": v for k, v in {**known, **alphas}.items()})
        return _unprefixed(tensors), sorted(unmatched + more)
    conv._bake_lokr_alpha_(inner)
    known, more = _partition(inner, lambda m: m.startswith(_DIFFUSERS_ROOTS))
    return known, sorted(unmatched + more)


# -- matching a converted file to the loaded transformer ---------------------------------

def targets(transformer: Any) -> dict[str, tuple[int, int]]:
    """Every linear layer of the transformer (bnb's Linear4bit and GGUF's layers are nn.Linear
    subclasses and keep in/out_features), by module name."""
    found = {}
    for name, module in transformer.named_modules():
        if hasattr(module, "in_features") and hasattr(module, "out_features") and "lora_" not in name \
                and ".base_layer" not in name:
            found[name] = (int(module.in_features), int(module.out_features))
    # BFL LoKr files act on the fused QKV projections that diffusers creates on load.
    for name, (hidden, out) in list(found.items()):
        for single, fused in ((".attn.to_q", ".attn.to_qkv"), (".attn.add_q_proj", ".attn.to_added_qkv")):
            if name.endswith(single):
                found.setdefault(name[: -len(single)] + fused, (hidden, 3 * out))
    return found


def _module_dims(converted: Converted) -> dict[str, tuple[int, int]]:
    dims: dict[str, tuple[int, int]] = {}
    t = converted.tensors
    if converted.kind == "lora":
        for key, value in t.items():
            if key.endswith(".lora_A.weight"):
                module = key[: -len(".lora_A.weight")]
                up = t.get(f"{module}.lora_B.weight")
                dims[module] = (int(value.shape[1]), int(up.shape[0]) if up is not None else -1)
        return dims
    for module in {_module_of(k) for k in t}:
        def factor(name: str) -> tuple[int, int]:
            full = t.get(f"{module}.{name}")
            if full is not None:
                return int(full.shape[0]), int(full.shape[1])
            return int(t[f"{module}.{name}_a"].shape[0]), int(t[f"{module}.{name}_b"].shape[1])
        (o1, i1), (o2, i2) = factor("lokr_w1"), factor("lokr_w2")
        dims[module] = (i1 * i2, o1 * o2)
    return dims


def check_fits(converted: Converted, file_name: str, model_targets: dict[str, tuple[int, int]], *,
               model_name: str, model_hidden: int, partial: bool) -> list[str]:
    """Refuse (one line) a file that does not fit the loaded transformer; returns notices.

    A layer of the right name but the wrong size means another model of the family (klein
    vs dev); names that place nowhere are counted, and a partial match needs ``partial``.
    """
    total = len(converted.tensors) + len(converted.unmatched)
    dims = _module_dims(converted)
    wrong = {m: d for m, d in dims.items() if m in model_targets and model_targets[m] != d}
    if wrong:
        hidden = Counter(d[0] for m, d in dims.items() if _HIDDEN_INPUTS.search(m)).most_common(1)
        made_for = HIDDEN_SIZES.get(hidden[0][0], f"hidden size {hidden[0][0]}") if hidden else "another model"
        raise InvalidRequest(f"{file_name} is a LoRA for {made_for}, not for {model_name} (hidden size "
                             f"{model_hidden}): {len(wrong)} of its layers have other sizes")
    missing = [m for m in dims if m not in model_targets]
    unplaced = len(converted.unmatched) + sum(1 for k in converted.tensors if _module_of(k) in missing)
    if unplaced == total:
        raise InvalidRequest(f"{file_name}: none of its {total} keys ({converted.format} format) match a layer "
                             f"of {model_name}")
    if unplaced:
        message = f"{file_name}: {unplaced} of its {total} keys match no layer of {model_name}"
        if not partial:
            raise InvalidRequest(f"{message}; --lora-partial loads the rest")
        for module in missing:
            for key in [k for k in converted.tensors if _module_of(k) == module]:
                converted.tensors.pop(key)
        return [f"{message}; loading the other {total - unplaced} (--lora-partial)"]
    return []
