#!/usr/bin/env python
"""Build and train the embedded ``tiny`` FLUX.2 [klein]-architecture model on CPU.

The model learns ``a {fg} {shape} on a {bg} background`` (see ``tiny_data.py``) and is saved as
a regular diffusers folder that ``diffusers.Flux2KleinPipeline.from_pretrained`` loads.

Stages (all seeded):
1. tokenizer: byte-level BPE trained here with ``tokenizers`` (each prompt word one token),
   wrapped as ``Qwen2TokenizerFast`` with a Qwen-style chat template;
2. text encoder: ``Qwen3ForCausalLM`` with 28 tiny layers, frozen at its seeded random init
   (token embeddings rescaled to unit std so the stacked hidden states of layers 9/18/27
   are dominated by token identity rather than by random mixing);
3. VAE (``AutoencoderKLFlux2``, 4x down, 4 latent channels): reconstruction + small KL;
   then frozen, and its ``bn`` running statistics set to the real statistics of the
   patchified latents;
4. transformer (``Flux2Transformer2DModel``): rectified flow exactly as the pipeline samples,
   x_t = (1 - s) x0 + s n, target n - x0, on packed, bn-normalised latents, with s drawn from
   the pipeline's own resolution-dependent time shift.

Usage::

    python scripts/train_tiny.py --out flux2cli/models/tiny --random        # seconds
    python scripts/train_tiny.py --out flux2cli/models/tiny --seed 0 --vae-minutes 9 --dit-minutes 44
    python scripts/train_tiny.py --out /tmp/tiny-smoke --smoke              # < ~60 s
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Passive OpenMP waiting: on a shared 2-core box, spinning OpenMP threads make every parallel
# region wait for a descheduled sibling (measured: 4.4 s/step instead of 1.4 s under load).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_data  # noqa: E402

MAX_SEQUENCE_LENGTH = 32
TEXT_ENCODER_OUT_LAYERS = (9, 18, 27)
DEFAULT_STEPS = 4

TEXT_HIDDEN = 32
TEXT_CONFIG = dict(
    hidden_size=TEXT_HIDDEN,
    intermediate_size=64,
    num_hidden_layers=28,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=1024,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    initializer_range=0.02,
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    mid_block_add_attention=False,
    batch_norm_eps=1e-4,
    batch_norm_momentum=0.1,
    patch_size=(2, 2),
)

DIT_CONFIG = dict(
    patch_size=1,
    in_channels=4 * VAE_CONFIG["latent_channels"],
    out_channels=None,
    num_layers=2,
    num_single_layers=4,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=len(TEXT_ENCODER_OUT_LAYERS) * TEXT_HIDDEN,
    timestep_guidance_channels=64,
    mlp_ratio=3.0,
    axes_dims_rope=(8, 8, 8, 8),
    rope_theta=2000,
    eps=1e-6,
    guidance_embeds=False,
)

# FLUX.2 [klein] scheduler settings (the pipeline computes ``mu`` itself)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    time_shift_type="exponential",
    invert_sigmas=False,
    shift_terminal=None,
    use_karras_sigmas=False,
    use_exponential_sigmas=False,
    use_beta_sigmas=False,
    stochastic_sampling=False,
)

# Qwen3-style chat template (what the pipeline renders with add_generation_prompt=True,
# enable_thinking=False): "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set content = message['content'] %}"
    "{%- else %}{%- set content = message['content'] | map(attribute='text') | join('') %}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- components


def build_tokenizer():
    """Byte-level BPE trained on the task prompts + template words, as ``Qwen2TokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    words = tiny_data.COLOR_NAMES + tiny_data.SHAPES + ["a", "an", "on", "background"]
    corpus = (
        tiny_data.all_prompts() * 4
        + [w.capitalize() + " " + w for w in words] * 4
        + ["user\n", "assistant\n", "system\n", "\n\n"] * 40
    )
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["model"]["merges"]]
    hf = Qwen2TokenizerFast(vocab=vocab, merges=merges, model_max_length=1024)
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    hf.add_tokens(["<think>", "</think>"])
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "right"
    return hf


def build_text_encoder(vocab_size: int, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab_size, **TEXT_CONFIG)
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        emb = model.get_input_embeddings().weight
        emb.copy_(torch.randn(emb.shape, generator=g))
    model.eval().requires_grad_(False)
    return model


def build_vae(seed: int):
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(**VAE_CONFIG)
    return vae


def build_transformer(seed: int):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(**DIT_CONFIG)


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def assemble_pipeline(tokenizer, text_encoder, vae, transformer):
    from diffusers import Flux2KleinPipeline

    return Flux2KleinPipeline(
        scheduler=build_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def write_tiny_info(out_dir: Path, extra: dict | None = None) -> None:
    info = {
        "task": "a {fg} {shape} on a {bg} background",
        "colors": tiny_data.PALETTE,
        "shapes": tiny_data.SHAPES,
        "resolutions_wh": tiny_data.RESOLUTIONS,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "text_encoder_out_layers": list(TEXT_ENCODER_OUT_LAYERS),
        "default_num_inference_steps": DEFAULT_STEPS,
        "guidance_scale": 1.0,
        "is_distilled": True,
        "dtype": "float32",
    }
    info.update(extra or {})
    (out_dir / "tiny_info.json").write_text(json.dumps(info, indent=2) + "\n")


def save_pipeline_atomic(pipe, out_dir: str | Path, info: dict | None = None) -> None:
    """save_pretrained into a temp dir next to ``out_dir``, then swap it in."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_tiny_info(tmp, info)
        for root, dirs, files in os.walk(tmp):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_random_pipeline(out_dir: str | Path | None = None, seed: int = 0):
    """Seeded, untrained pipeline (bn stats mean 0 / var 1). Saves to ``out_dir`` if given."""
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer), seed)
    vae = build_vae(seed + 10)
    transformer = build_transformer(seed + 20)
    pipe = assemble_pipeline(tokenizer, text_encoder, vae, transformer)
    if out_dir is not None:
        save_pipeline_atomic(pipe, out_dir, {"trained": False, "seed": seed})
    return pipe


def param_count(m) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- helpers


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """uint8 BxHxWx3 -> float Bx3xHxW in [-1, 1]."""
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    from diffusers import Flux2KleinPipeline

    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), 64):
            out.append(
                Flux2KleinPipeline._get_qwen3_prompt_embeds(
                    text_encoder,
                    tokenizer,
                    prompts[i : i + 64],
                    dtype=torch.float32,
                    device=torch.device("cpu"),
                    max_sequence_length=MAX_SEQUENCE_LENGTH,
                    hidden_states_layers=TEXT_ENCODER_OUT_LAYERS,
                )
            )
    return torch.cat(out)


def latents_for_dit(vae, x: torch.Tensor, bn_mean: torch.Tensor, bn_std: torch.Tensor):
    """Images in [-1,1] -> packed, bn-normalised latents (B, L, 4*C) + latent ids, like the pipeline."""
    from diffusers import Flux2KleinPipeline as P

    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        z = P._patchify_latents(z)
        z = (z - bn_mean.view(1, -1, 1, 1)) / bn_std.view(1, -1, 1, 1)
        ids = P._prepare_latent_ids(z)
        return P._pack_latents(z), ids


def time_shift_exp(mu: float, t: torch.Tensor) -> torch.Tensor:
    """The scheduler's exponential time shift (sigma = 1 => 1, sigma = 0 => 0)."""
    return math.exp(mu) / (math.exp(mu) + (1.0 / t.clamp_min(1e-6) - 1.0))


def lr_at(step: int, total: int, peak: float, warmup: int, final_frac: float = 0.1, schedule: str = "cosine") -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def _replan(step: int, elapsed: float, minutes: float, total: int, name: str) -> int:
    """Wall-clock mode: re-estimate the total step count from the average speed so far, so the
    LR schedule ends when the time budget does (throughput on a shared box varies)."""
    per = elapsed / step
    new = max(step + 1, int(step + (minutes * 60 - elapsed) / per))
    if total >= 10**9 or abs(new - total) > 0.02 * total:
        log(f"{name}: {per:.3f} s/step -> planning {new} steps for {minutes} min")
        return new
    return total


# --------------------------------------------------------------------------- VAE


def train_vae(vae, args, rng: np.random.Generator, steps: int | None, minutes: float | None) -> int:
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    res = tiny_data.RESOLUTIONS
    t0 = time.time()
    total = steps
    if total is None:
        total = 10**9  # decided after a short timing probe
    step = 0
    ema_loss = None
    while step < total:
        if steps is None and step >= 20 and step % 25 == 0:
            total = _replan(step, time.time() - t0, minutes, total, "VAE")
        w, h = res[step % len(res)]
        imgs, _ = tiny_data.sample_batch(rng, args.vae_batch, w, h)
        x = to_tensor(imgs)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total if total < 10**9 else 10**6, args.vae_lr, 100)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        l1 = (rec - x).abs().mean()
        kl = post.kl().mean() / (z[0].numel())
        loss = mse + 0.5 * l1 + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 100 == 0 or step == total - 1:
            log(f"VAE step {step}/{total} loss {ema_loss:.5f} mse {mse.item():.5f} kl {kl.item():.3f}")
        step += 1
    vae.eval().requires_grad_(False)
    return step


@torch.no_grad()
def vae_stats(vae, rng: np.random.Generator, n_per_res: int,
              colours: list[str] = tiny_data.COLOR_NAMES) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """bn running stats of patchified latents (mode), and reconstruction accuracy of the VAE,
    on images in ``colours`` (the bn stats the DiT uses are those of the base eight)."""
    from diffusers import Flux2KleinPipeline as P

    zs = []
    ok = {"bg_ok": 0, "fg_ok": 0, "shape_ok": 0}
    n = 0
    for w, h in tiny_data.RESOLUTIONS:
        for _ in range(max(1, n_per_res // 32)):
            imgs, idx = tiny_data.sample_batch(rng, 32, w, h, colours)
            z = vae.encode(to_tensor(imgs)).latent_dist.mode()
            zp = P._patchify_latents(z)
            zs.append(zp.permute(0, 2, 3, 1).reshape(-1, zp.shape[1]))
            rec = vae.decode(z).sample
            rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            combos = tiny_data.all_combos(colours)
            for img, i in zip(rec[:8], idx[:8]):
                fg, shape, bg = combos[i]
                r = tiny_data.score_image(img, fg, shape, bg, colours)
                for k in ok:
                    ok[k] += r[k]
                n += 1
    zs = torch.cat(zs)
    mean = zs.mean(0)
    var = zs.var(0, unbiased=False)
    acc = {k: v / max(1, n) for k, v in ok.items()}
    return mean, var, acc


def finetune_decoder(vae, args, rng: np.random.Generator, steps: int | None, minutes: float | None,
                     colours: list[str] = tiny_data.COLOR_NAMES) -> int:
    """Refine the decoder (and post_quant_conv) with the encoder frozen: the latents, the bn
    statistics and therefore the trained transformer stay valid, only reconstructions get sharper.
    With ``colours`` beyond the base eight the decoder also learns to draw the latents the frozen
    encoder gives those colours (what a LoRA teaching them makes the transformer produce)."""
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + (
        list(vae.post_quant_conv.parameters()) if vae.post_quant_conv is not None else []
    )
    for p in params:
        p.requires_grad_(True)
    vae.decoder.train()
    opt = torch.optim.AdamW(params, lr=args.dec_lr, betas=(0.9, 0.99), weight_decay=0.0)
    res = tiny_data.RESOLUTIONS
    t0 = time.time()
    total = steps if steps is not None else 10**9
    step, ema_loss = 0, None
    while step < total:
        if steps is None and step >= 20 and step % 25 == 0:
            total = _replan(step, time.time() - t0, minutes, total, "decoder")
        w, h = res[step % len(res)]
        imgs, _ = tiny_data.sample_batch(rng, args.vae_batch, w, h, colours)
        x = to_tensor(imgs)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total if total < 10**9 else 10**6, args.dec_lr, 20)
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        loss = mse + 0.5 * (rec - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_loss = loss.item() if ema_loss is None else 0.95 * ema_loss + 0.05 * loss.item()
        if step % 50 == 0 or step == total - 1:
            log(f"decoder step {step}/{total} loss {ema_loss:.5f} mse {mse.item():.5f}")
        step += 1
    vae.eval().requires_grad_(False)
    return step


# --------------------------------------------------------------------------- transformer


class EMA:
    def __init__(self, model, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.n = 0

    @torch.no_grad()
    def update(self, model):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model):
        model.load_state_dict(self.shadow)


def sample_sigmas(rng_t: torch.Generator, b: int, seq_len: int, uniform_frac: float) -> torch.Tensor:
    """Noise levels: mostly the pipeline's shifted schedule density (mu for this image size),
    a fraction uniform in (0, 1) so that low noise levels are seen as well."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    mu = compute_empirical_mu(seq_len, DEFAULT_STEPS)
    u = torch.rand(b, generator=rng_t).clamp(1e-4, 1 - 1e-4)
    s = time_shift_exp(mu, u)
    uni = torch.rand(b, generator=rng_t) < uniform_frac
    s = torch.where(uni, u, s)
    return s


@torch.no_grad()
def build_latent_cache(vae, rng, per_combo: int, bn_mean, bn_std, colours: list[str] = tiny_data.COLOR_NAMES) -> dict:
    """Pre-encode ``per_combo`` random images of every prompt at every resolution (the VAE
    is frozen, so encoding once instead of every step saves ~30 % of each DiT step)."""
    combos = tiny_data.all_combos(colours)
    n_combo = len(combos)
    cache = {}
    for w, h in tiny_data.RESOLUTIONS:
        idx = np.tile(np.arange(n_combo), per_combo)
        lat = []
        for i in range(0, len(idx), 64):
            imgs = np.stack([tiny_data.sample_image(rng, *combos[j], w, h) for j in idx[i : i + 64]])
            x0, img_ids = latents_for_dit(vae, to_tensor(imgs), bn_mean, bn_std)
            lat.append(x0)
        cache[(w, h)] = (torch.cat(lat), torch.from_numpy(idx), img_ids[0])
        log(f"latent cache {w}x{h}: {tuple(cache[(w, h)][0].shape)}")
    return cache


def train_dit(pipe, prompt_embeds, bn_mean, bn_std, args, rng, steps, minutes, out_dir, info,
              colours: list[str] = tiny_data.COLOR_NAMES, save=None):
    """Flow-matching training of whatever in ``pipe.transformer`` requires grad (all of it, or
    a LoRA's weights), on ``prompt_embeds`` of ``all_prompts(colours)``; ``save(pipe, ema,
    out_dir, info)`` writes a checkpoint (default: the whole pipeline with the EMA weights)."""
    transformer, vae = pipe.transformer, pipe.vae
    save = save or save_with_ema
    cache = build_latent_cache(vae, rng, args.latent_cache, bn_mean, bn_std, colours) if args.latent_cache > 0 else None
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=args.dit_lr, betas=(0.9, 0.99), weight_decay=0.01, eps=1e-8
    )
    ema = EMA(transformer, args.ema)
    rng_t = torch.Generator().manual_seed(args.seed + 1234)
    from diffusers import Flux2KleinPipeline as P

    txt_ids = P._prepare_text_ids(prompt_embeds[:1])[0]  # (L, 4)
    res = tiny_data.RESOLUTIONS
    t0 = time.time()
    last_ckpt = time.time()
    total = steps if steps is not None else 10**9
    step = 0
    ema_loss = None
    while step < total:
        if steps is None and step >= 25 and step % 25 == 0:
            if args.dit_schedule == "constant":  # the schedule does not depend on the total: just stop in time
                if time.time() - t0 >= minutes * 60:
                    log(f"DiT: time budget reached after {step} steps")
                    break
            else:
                total = _replan(step, time.time() - t0, minutes, total, "DiT")
        w, h = res[step % len(res)]
        if cache is not None:
            lat, lat_idx, ids1 = cache[(w, h)]
            pick = torch.from_numpy(rng.integers(0, lat.shape[0], size=args.dit_batch))
            x0, idx = lat[pick], lat_idx[pick]
            img_ids = ids1.unsqueeze(0).expand(x0.shape[0], -1, -1)
        else:
            imgs, idx = tiny_data.sample_batch(rng, args.dit_batch, w, h, colours)
            x0, img_ids = latents_for_dit(vae, to_tensor(imgs), bn_mean, bn_std)
            idx = torch.from_numpy(idx)
        b, L, _ = x0.shape
        emb = prompt_embeds[idx]
        noise = torch.randn(x0.shape, generator=rng_t)
        sig = sample_sigmas(rng_t, b, L, args.uniform_frac)
        s = sig.view(b, 1, 1)
        xt = (1 - s) * x0 + s * noise
        target = noise - x0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total if total < 10**9 else 10**6, args.dit_lr, args.warmup,
                            schedule=args.dit_schedule)
        pred = transformer(
            hidden_states=xt,
            encoder_hidden_states=emb,
            timestep=sig,
            img_ids=img_ids,
            txt_ids=txt_ids.unsqueeze(0).expand(b, -1, -1),
            guidance=None,
            return_dict=False,
        )[0]
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(transformer)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 100 == 0 or step == total - 1:
            log(f"DiT step {step}/{total} loss {ema_loss:.4f} lr {opt.param_groups[0]['lr']:.2e}")
        step += 1
        if out_dir is not None and args.ckpt_minutes > 0 and time.time() - last_ckpt > args.ckpt_minutes * 60:
            save(pipe, ema, out_dir, dict(info, dit_steps_done=step, dit_steps_planned=total))
            last_ckpt = time.time()
            log(f"checkpoint saved at step {step}")
    transformer.eval()
    return ema, step, total


def save_with_ema(pipe, ema, out_dir, info):
    tr = pipe.transformer
    live = copy.deepcopy(tr.state_dict())
    ema.copy_to(tr)
    save_pipeline_atomic(pipe, out_dir, info)
    tr.load_state_dict(live)


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output diffusers folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--random", action="store_true", help="only write the seeded untrained folder")
    ap.add_argument("--smoke", action="store_true", help="a few steps of each stage (CI)")
    ap.add_argument("--vae-minutes", type=float, default=9.0)
    ap.add_argument("--dit-minutes", type=float, default=44.0)
    ap.add_argument("--vae-steps", type=int, default=None, help="exact VAE steps (overrides --vae-minutes)")
    ap.add_argument("--dit-steps", type=int, default=None, help="exact DiT steps (overrides --dit-minutes)")
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--dit-batch", type=int, default=32)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-5)
    ap.add_argument("--dit-lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--dit-schedule", choices=["constant", "cosine"], default="constant",
                    help="DiT LR after warmup: constant (+EMA; a run stopped at step k equals --dit-steps k) or cosine")
    ap.add_argument("--vae-from", default=None,
                    help="skip VAE training: take the VAE (weights + bn stats) from this pipeline folder")
    ap.add_argument("--dit-from", default=None,
                    help="skip DiT training: take the transformer from this pipeline folder")
    ap.add_argument("--dit-init", default=None,
                    help="resume: start DiT training from the transformer of this pipeline folder")
    ap.add_argument("--dec-steps", type=int, default=None, help="decoder refinement steps (encoder frozen)")
    ap.add_argument("--dec-minutes", type=float, default=8.0, help="decoder refinement minutes (0: skip)")
    ap.add_argument("--dec-lr", type=float, default=5e-4)
    ap.add_argument("--dec-palette", choices=["base", "extended"], default="base",
                    help="colours of the decoder refinement's images: the base eight, or those plus "
                         "tiny_data.NEW_COLOURS (for the tiny-colours LoRA)")
    ap.add_argument("--latent-cache", type=int, default=24,
                    help="pre-encoded images per prompt and resolution for the DiT (0: encode every step)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--uniform-frac", type=float, default=0.2)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.out)
    t_start = time.time()

    if args.random:
        build_random_pipeline(out_dir, args.seed)
        log(f"random pipeline written to {out_dir} in {time.time() - t_start:.1f} s")
        return 0

    if args.smoke:
        args.vae_steps, args.dit_steps, args.dec_steps = 6, 6, 4
        args.latent_cache = 1
        args.vae_batch, args.dit_batch = 4, 4
        args.warmup, args.ckpt_minutes = 2, 0
        n_stats = 32
    else:
        n_stats = 512

    pipe = build_random_pipeline(None, args.seed)
    log(
        "params: text_encoder %d, vae %d, transformer %d"
        % (param_count(pipe.text_encoder), param_count(pipe.vae), param_count(pipe.transformer))
    )
    info = {"trained": True, "seed": args.seed, "args": vars(args)}

    # ---- VAE
    if args.vae_from:
        from diffusers import AutoencoderKLFlux2

        src = AutoencoderKLFlux2.from_pretrained(args.vae_from, subfolder="vae")
        assert list(src.config.block_out_channels) == list(pipe.vae.config.block_out_channels), "VAE config mismatch"
        pipe.vae.load_state_dict(src.state_dict())
        pipe.vae.eval().requires_grad_(False)
        mean, var = pipe.vae.bn.running_mean.clone(), pipe.vae.bn.running_var.clone()
        prev = json.loads((Path(args.vae_from) / "tiny_info.json").read_text())
        for k in ("vae_steps", "vae_seconds", "vae_reconstruction_scores"):
            info[k] = prev.get(k)
        info["vae_from"] = str(args.vae_from)
        log(f"VAE taken from {args.vae_from} ({info.get('vae_steps')} steps)")
    else:
        rng = np.random.default_rng(args.seed)
        torch.manual_seed(args.seed + 1)
        t0 = time.time()
        vae_steps = train_vae(pipe.vae, args, rng, args.vae_steps, args.vae_minutes)
        vae_s = time.time() - t0
        mean, var, rec_acc = vae_stats(pipe.vae, np.random.default_rng(args.seed + 7), n_stats)
        with torch.no_grad():
            pipe.vae.bn.running_mean.copy_(mean)
            pipe.vae.bn.running_var.copy_(var)
            pipe.vae.bn.num_batches_tracked.fill_(1)
        log(f"VAE done: {vae_steps} steps in {vae_s:.0f} s; reconstruction scores {rec_acc}")
        log(f"bn mean {mean.numpy().round(3).tolist()}\nbn var {var.numpy().round(3).tolist()}")
        info.update(vae_steps=vae_steps, vae_seconds=round(vae_s), vae_reconstruction_scores=rec_acc)
        if not args.smoke:
            save_pipeline_atomic(pipe, out_dir, dict(info, dit_steps_done=0))

    # ---- prompt embeddings (frozen encoder): all 168 prompts, once
    prompts = tiny_data.all_prompts()
    prompt_embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    bn_std = torch.sqrt(var + pipe.vae.config.batch_norm_eps)

    # ---- transformer
    if args.dit_from:
        from diffusers import Flux2Transformer2DModel

        src = Flux2Transformer2DModel.from_pretrained(args.dit_from, subfolder="transformer")
        pipe.transformer.load_state_dict(src.state_dict())
        prev = json.loads((Path(args.dit_from) / "tiny_info.json").read_text())
        for k in ("dit_steps", "dit_seconds", "dit_steps_done"):
            if k in prev:
                info[k] = prev[k]
        info["dit_from"] = str(args.dit_from)
        log(f"transformer taken from {args.dit_from} ({prev.get('dit_steps_done')} steps)")
    else:
        if args.dit_init:
            from diffusers import Flux2Transformer2DModel

            src = Flux2Transformer2DModel.from_pretrained(args.dit_init, subfolder="transformer")
            pipe.transformer.load_state_dict(src.state_dict())
            prev = json.loads((Path(args.dit_init) / "tiny_info.json").read_text())
            info["dit_init"] = {"from": str(args.dit_init), "steps_before": prev.get("dit_steps_done")}
            log(f"transformer resumed from {args.dit_init} ({prev.get('dit_steps_done')} steps)")
        t0 = time.time()
        ema, dit_steps, _ = train_dit(
            pipe, prompt_embeds, mean, bn_std, args, np.random.default_rng(args.seed + 2),
            args.dit_steps, args.dit_minutes, None if args.smoke else out_dir, info,
        )
        dit_s = time.time() - t0
        ema.copy_to(pipe.transformer)  # the saved transformer is the EMA
        info.update(dit_steps=dit_steps, dit_steps_done=dit_steps, dit_seconds=round(dit_s))
        log(f"DiT: {dit_steps} steps in {dit_s:.0f} s")
        if not args.smoke:
            save_pipeline_atomic(pipe, out_dir, info)

    # ---- decoder refinement (encoder frozen: latents, bn stats and the DiT stay valid)
    if args.dec_steps or (args.dec_steps is None and args.dec_minutes > 0):
        # the encoder must stay frozen: its latent statistics, measured on the same images
        # before and after, must not move (the DiT was trained on them)
        colours = tiny_data.EXTENDED_NAMES if args.dec_palette == "extended" else tiny_data.COLOR_NAMES
        mean_before, _, _ = vae_stats(pipe.vae, np.random.default_rng(args.seed + 7), n_stats)
        t0 = time.time()
        dec_steps = finetune_decoder(
            pipe.vae, args, np.random.default_rng(args.seed + 3), args.dec_steps, args.dec_minutes, colours
        )
        dec_s = time.time() - t0
        mean2, _, rec_acc = vae_stats(pipe.vae, np.random.default_rng(args.seed + 7), n_stats)
        assert torch.allclose(mean2, mean_before, atol=1e-4), "encoder changed during decoder refinement"
        info.update(dec_steps=dec_steps, dec_seconds=round(dec_s), vae_reconstruction_scores_after_dec=rec_acc)
        if args.dec_palette == "extended":
            _, _, ext_acc = vae_stats(pipe.vae, np.random.default_rng(args.seed + 7), n_stats, colours)
            info.update(dec_palette=colours, vae_reconstruction_scores_extended=ext_acc)
            log(f"reconstruction scores on all {len(colours)} colours {ext_acc}")
        log(f"decoder refinement: {dec_steps} steps in {dec_s:.0f} s; reconstruction scores {rec_acc}")

    info.update(final=True, total_seconds=round(time.time() - t_start))
    save_pipeline_atomic(pipe, out_dir, info)
    log(f"done in {time.time() - t_start:.0f} s -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
