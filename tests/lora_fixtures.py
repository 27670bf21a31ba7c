"""LoRA files in every shared layout, written from one adapter in diffusers' PEFT layout.

``canonical`` is ``{module}.lora_A.weight`` / ``.lora_B.weight`` over diffusers module
names; each writer lays the same numbers out the way another tool does, so loading any of
them must give the same adapter (kohya exactly, the others up to float rounding).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

_DOUBLE = {"attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj", "ff.linear_in": "img_mlp.0",
           "ff.linear_out": "img_mlp.2", "ff_context.linear_in": "txt_mlp.0", "ff_context.linear_out": "txt_mlp.2"}
_QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
        "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2"}
_EXTRA = {"context_embedder": "txt_in", "x_embedder": "img_in", "proj_out": "final_layer.linear"}
TARGETS = (*[m for group in _QKV.values() for m in group], *_DOUBLE, *_SINGLE)


def random_lora(transformer, rank: int = 4, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """A random adapter on every attention and MLP layer and the context embedder."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in transformer.named_modules():
        if not hasattr(module, "in_features") or not (name == "context_embedder" or any(name.endswith("." + t) for t in TARGETS)):
            continue
        out[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * std
        out[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator) * std
    return out


def modules(canonical: dict[str, torch.Tensor]) -> list[str]:
    return sorted({k.rsplit(".lora_", 1)[0] for k in canonical})


def warm_and_cold(transformer, folder: Path) -> Path:
    """Two random PEFT LoRAs for the server and web UI tests: "warm" (rank 4) and "cold" (rank 2)."""
    for name, seed, rank in (("warm", 1, 4), ("cold", 2, 2)):
        write(to_peft(random_lora(transformer, rank=rank, seed=seed, std=0.1)), folder / f"{name}.safetensors")
    return folder


def write(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def to_peft(canonical):
    return {f"transformer.{k}": v for k, v in canonical.items()}


def _bfl_groups(canonical):
    """BFL module name -> list of diffusers modules it stacks (q, k, v for a fused qkv)."""
    groups = {}
    for module in modules(canonical):
        if module in _EXTRA:
            groups[_EXTRA[module]] = [module]
            continue
        container, index, within = module.split(".", 2)
        if container == "single_transformer_blocks":
            groups[f"single_blocks.{index}.{_SINGLE[within]}"] = [module]
        elif within in _DOUBLE:
            groups[f"double_blocks.{index}.{_DOUBLE[within]}"] = [module]
        else:
            for fused, parts in _QKV.items():
                if within == parts[0]:
                    groups[f"double_blocks.{index}.{fused}"] = [f"{container}.{index}.{p}" for p in parts]
    return groups


def _stack(canonical, parts):
    """Several LoRAs on q, k, v as one on the fused qkv: A's stacked, B block-diagonal."""
    down = torch.cat([canonical[f"{p}.lora_A.weight"] for p in parts])
    up = torch.block_diag(*[canonical[f"{p}.lora_B.weight"] for p in parts])
    return down, up


def to_kohya(canonical, alpha_fraction: float = 0.5):
    """kohya's ``lora_unet_`` names, lora_down/lora_up and an alpha (the up weights carry 1/fraction,
    a power of two, so the alpha scaling gives the same numbers back exactly)."""
    out = {}
    for bfl, parts in _bfl_groups(canonical).items():
        down, up = _stack(canonical, parts)
        name = "lora_unet_" + bfl.replace(".", "_")
        out[f"{name}.lora_down.weight"] = down
        out[f"{name}.lora_up.weight"] = up / alpha_fraction
        out[f"{name}.alpha"] = torch.tensor(float(down.shape[0] * alpha_fraction))
    return out


def to_bfl(canonical, prefix: str = "diffusion_model."):
    """ai-toolkit's BFL names (``diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight``)."""
    out = {}
    for bfl, parts in _bfl_groups(canonical).items():
        down, up = _stack(canonical, parts)
        out[f"{prefix}{bfl}.lora_A.weight"] = down
        out[f"{prefix}{bfl}.lora_B.weight"] = up
    return out


def to_fal(canonical):
    """fal's trainer: BFL names under PEFT's ``base_model.model.`` prefix."""
    return to_bfl(canonical, prefix="base_model.model.")


def to_lokr(canonical, *, decomposed: bool = True, lycoris: bool = False):
    """The same deltas as LoKr: kron([[1]], B @ A) = B @ A, with w2 as factors or as one matrix."""
    out = {}
    for module in modules(canonical):
        a, b = canonical[f"{module}.lora_A.weight"], canonical[f"{module}.lora_B.weight"]
        name = f"lycoris_{module.replace('.', '_')}" if lycoris else f"transformer.{module}"
        out[f"{name}.lokr_w1"] = torch.ones(1, 1)
        if decomposed:
            out[f"{name}.lokr_w2_a"], out[f"{name}.lokr_w2_b"] = b, a
            out[f"{name}.alpha"] = torch.tensor(float(a.shape[0]))
        else:
            out[f"{name}.lokr_w2"] = b @ a
    return out


WRITERS = {"peft": to_peft, "kohya": to_kohya, "bfl": to_bfl, "fal": to_fal,
           "lokr": to_lokr, "lokr-full": lambda c: to_lokr(c, decomposed=False),
           "lycoris": lambda c: to_lokr(c, lycoris=True)}


def read_peft(path: Path) -> dict[str, torch.Tensor]:
    """A diffusers/PEFT file (``transformer.{module}.lora_A.weight``, alpha = rank) as ``canonical``:
    real trained adapters such as the shipped tiny-colours go through the same writers."""
    from safetensors.torch import load_file

    return {k.removeprefix("transformer."): v for k, v in load_file(str(path)).items()}
