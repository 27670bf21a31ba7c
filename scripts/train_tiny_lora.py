#!/usr/bin/env python
"""Train ``tiny-colours``, the LoRA shipped with flux2cli (flux2cli/loras/tiny-colours.safetensors).

It teaches the embedded ``tiny`` model three colours it never learned — ``tiny_data.NEW_COLOURS``:
pink, cyan and brown — as foreground and background in its one prompt pattern
``a {colour} {shape} on a {colour} background``, while its own eight keep working.

A PEFT LoRA (rank 8 by default; alpha = rank, so PEFT's scaling is 1 and the file's numbers
are the adapter) on every attention and MLP layer of the transformer and on its context
embedder, trained with ``train_tiny.train_dit``: the same rectified-flow objective, noise
schedule, latent cache and EMA as the base model, on the prompts of all eleven colours
(about half of them name a new colour; the rest hold the base behaviour in place). The text
encoder and the VAE are frozen; the VAE's decoder was refined on the eleven colours first
(``train_tiny.py --dec-palette extended``), since the base decoder could not draw them.

The file is written in diffusers' PEFT layout (``transformer.{module}.lora_A.weight``), what
``flux2 generate --lora`` and diffusers' ``load_lora_weights`` read, atomically, at every
checkpoint and at the end.

    python scripts/train_tiny_lora.py --minutes 30                      # -> flux2cli/loras/tiny-colours.safetensors
    python scripts/train_tiny_lora.py --out /tmp/tc.safetensors --smoke  # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_tiny.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_data  # noqa: E402
import train_tiny  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE = REPO / "flux2cli" / "models" / "tiny"
DEFAULT_OUT = REPO / "flux2cli" / "loras" / "tiny-colours.safetensors"
# every linear layer of attention and MLP, in diffusers' Flux2Transformer2DModel names
TARGET_SUFFIXES = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
    "attn.add_v_proj", "attn.to_add_out", "ff.linear_in", "ff.linear_out", "ff_context.linear_in",
    "ff_context.linear_out", "attn.to_qkv_mlp_proj", "attn.to_out",
)


def lora_targets(transformer) -> list[str]:
    """Full module names (exact, so ``attn.to_out`` never matches a double block's ModuleList)."""
    return sorted(
        name for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (name == "context_embedder" or any(name.endswith("." + s) for s in TARGET_SUFFIXES))
    )


def lora_tensors(transformer, state_dict: dict) -> dict[str, torch.Tensor]:
    """The adapter's weights from a (PEFT-wrapped) transformer state dict, under diffusers' names."""
    from peft.utils import get_peft_model_state_dict

    weights = get_peft_model_state_dict(transformer, state_dict=state_dict)
    return {f"transformer.{k}": v.detach().to(torch.float32).contiguous() for k, v in weights.items()}


def write_lora(tensors: dict[str, torch.Tensor], out: Path, config: dict, info: dict) -> None:
    """safetensors with diffusers' ``lora_adapter_metadata`` header, via a temp file and a rename."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(config),
                "flux2_training": json.dumps(info, default=str)}
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(DEFAULT_BASE), help="the tiny pipeline folder to train on")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="the LoRA file to write")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a few steps (CI)")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=None, help="exact steps (overrides --minutes)")
    # the names train_tiny.train_dit reads
    ap.add_argument("--dit-batch", type=int, default=16)
    ap.add_argument("--dit-lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--dit-schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--uniform-frac", type=float, default=0.2)
    ap.add_argument("--latent-cache", type=int, default=12,
                    help="pre-encoded images per prompt and resolution (0: encode every step)")
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.latent_cache, args.dit_batch, args.warmup, args.ckpt_minutes = 4, 1, 4, 2, 0

    from diffusers import Flux2KleinPipeline
    from peft import LoraConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()
    pipe = Flux2KleinPipeline.from_pretrained(args.base, torch_dtype=torch.float32)
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder):
        part.eval().requires_grad_(False)
    targets = lora_targets(pipe.transformer)
    config = {"r": args.rank, "lora_alpha": args.rank, "target_modules": targets}
    pipe.transformer.add_adapter(LoraConfig(**config, init_lora_weights=True))
    trainable = sum(p.numel() for p in pipe.transformer.parameters() if p.requires_grad)
    train_tiny.log(f"LoRA rank {args.rank} on {len(targets)} layers: {trainable} parameters")

    colours = tiny_data.EXTENDED_NAMES
    prompt_embeds = train_tiny.encode_prompts(pipe.tokenizer, pipe.text_encoder, tiny_data.all_prompts(colours))
    bn = pipe.vae.bn
    mean, std = bn.running_mean.clone(), torch.sqrt(bn.running_var + pipe.vae.config.batch_norm_eps)
    out = Path(args.out)
    info = {"base": "tiny", "colours": tiny_data.NEW_COLOURS, "rank": args.rank, "seed": args.seed,
            "args": {k: v for k, v in vars(args).items() if k not in ("base", "out")}}

    def save(pipe, ema, out_path, info):
        write_lora(lora_tensors(pipe.transformer, ema.shadow), Path(out_path), config, info)

    t0 = time.time()
    ema, steps, _ = train_tiny.train_dit(
        pipe, prompt_embeds, mean, std, args, np.random.default_rng(args.seed + 2), args.steps, args.minutes,
        out, info, colours=colours, save=save,
    )
    info.update(steps=steps, seconds=round(time.time() - t0), final=True)
    save(pipe, ema, out, info)
    train_tiny.log(f"LoRA: {steps} steps in {time.time() - t_start:.0f} s -> {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
