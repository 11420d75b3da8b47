"""Train the small CLIP shipped in ``calibclip/assets/synth-clip`` on the synthetic world.

    python scripts/train_synth_clip.py                       # the shipped recipe
    python scripts/train_synth_clip.py --steps 200 --out /tmp/x --n-train 2000   # a quick try

Data: the *train* splits of the three synthetic benchmarks (seed 0), rebuilt in memory with the
same item functions that ``calibclip synth`` writes to disk: TIR images × their 5 captions,
TBPR shots × 2 captions, and CIR set members × their plain description (so CIR targets are
ordinary image–caption pairs). Each step samples images uniformly and one of their captions.
Loss: standard CLIP InfoNCE (symmetric cross-entropy) with a learnable logit scale, clamped at
ln 100 as in the CLIP paper. Prints text→image R@1/R@10 on the TIR val split at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from calibclip.data.synth import SHIPPED_MODEL, cir_item, tbpr_item, tir_item
from calibclip.testing import save_clip_dir, tiny_clip_config
from calibclip.tokenizer import build_clip_tokenizer

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)  # OpenAI CLIP normalisation
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PROMPTS = ["a photo of $ that {}", "a photo of $"]  # composed-query templates: keep their words in the vocab


def build_pool(seed: int, n: int, split: str = "train") -> tuple[np.ndarray, list[list[str]], list[str]]:
    """About n images per task: uint8 (N, 64, 64, 3) images, their captions, and CIR modification texts."""
    images, caps, mods = [], [], []
    for i in tqdm(range(n), desc="tir", leave=False):
        it = tir_item(seed, split, i)
        images.append(np.asarray(it.image))
        caps.append(it.captions)
    for i in tqdm(range(n // 3), desc="tbpr", leave=False):
        for shot in tbpr_item(seed, split, i).shots:
            images.append(np.asarray(shot.image))
            caps.append(shot.captions)
    for i in tqdm(range(n // 6), desc="cir", leave=False):
        it = cir_item(seed, split, i)
        for img, cap in zip(it.images, it.captions):
            images.append(np.asarray(img))
            caps.append([cap])
        mods += [t for _, _, t in it.pairs]
    return np.stack(images), caps, mods


def cached_pool(seed: int, n: int, cache: Path | None, split: str = "train"):
    """build_pool, memoised in an .npz so a retrain skips generation."""
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=True)
        return z["images"], list(z["caps"]), list(z["mods"])
    pool = build_pool(seed, n, split)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, images=pool[0], caps=np.array(pool[1], dtype=object), mods=np.array(pool[2], dtype=object))
        os.replace(tmp, cache)
    return pool


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) → normalised float (B, 3, H, W), exactly what CLIPImageProcessor gives at 64 px."""
    x = torch.from_numpy(images).float().div_(255.0)
    x = (x - torch.from_numpy(MEAN)) / torch.from_numpy(STD)
    return x.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def recall_t2i(model, tok, images: np.ndarray, texts: list[str], gt: list[int], context: int,
               ks=(1, 5, 10)) -> dict[str, float]:
    """Text→image recall@k over a small gallery (gt[j] = image index of text j)."""
    model.eval()
    iv = torch.cat([_unwrap(model.get_image_features(pixel_values=to_pixels(images[i:i + 256]))) for i in
                    range(0, len(images), 256)])
    tv = []
    for i in range(0, len(texts), 256):
        enc = tok(texts[i:i + 256], padding=True, truncation=True, max_length=context, return_tensors="pt")
        tv.append(_unwrap(model.get_text_features(**enc)))
    tv = torch.cat(tv)
    sims = torch.nn.functional.normalize(tv, dim=-1) @ torch.nn.functional.normalize(iv, dim=-1).T
    rank = (sims > sims[torch.arange(len(gt)), torch.tensor(gt)][:, None]).sum(1)
    model.train()
    return {f"R@{k}": float((rank < k).float().mean()) * 100 for k in ks}


def _unwrap(x):
    """get_*_features returns a tensor (or a model output with pooler_output in newer transformers)."""
    return x if isinstance(x, torch.Tensor) else x.pooler_output


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=10000, help="About this many training images per task.")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--merges", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/calibclip-synth-cache"))
    ap.add_argument("--out", type=Path, default=SHIPPED_MODEL)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()
    images, caps, mods = cached_pool(args.seed, args.n_train, args.cache / f"train-s{args.seed}-n{args.n_train}.npz")
    print(f"pool: {len(images)} images, {sum(map(len, caps))} captions ({time.time() - t0:.0f}s)", flush=True)

    corpus = [c for cs in caps for c in cs] + mods + [p.format("") for p in PROMPTS] * 50
    tok_dir = args.out.parent / (args.out.name + ".tok-tmp")
    tok = build_clip_tokenizer(corpus, tok_dir, num_merges=args.merges)
    cfg = tiny_clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, image_size=64, patch_size=args.patch,
                           width=args.width, layers=args.layers, heads=args.heads, projection_dim=args.width,
                           context_length=args.context)
    from transformers import CLIPModel

    model = CLIPModel(cfg)
    model.train()
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(tok)}", flush=True)

    # Pre-tokenise every caption once (padding to the context length; the batch is cut to its longest).
    flat = [c for cs in caps for c in cs]
    enc = tok(flat, padding="max_length", truncation=True, max_length=args.context, return_tensors="np")
    ids, mask = torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
    starts = np.cumsum([0] + [len(cs) for cs in caps])

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))

    bar = tqdm(range(args.steps), desc="train", mininterval=5, file=sys.stdout)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = rng.sample(range(len(images)), args.batch_size)
        rows = [starts[i] + rng.randrange(starts[i + 1] - starts[i]) for i in idx]
        m = mask[rows]
        t = int(m.sum(1).max())
        out = model(input_ids=ids[rows, :t], attention_mask=m[:, :t], pixel_values=to_pixels(images[idx]),
                    return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps - 1:
            bar.set_postfix(loss=f"{out.loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
            print(f"step {step} loss {out.loss.item():.4f} scale {model.logit_scale.exp().item():.1f} "
                  f"lr {lr_at(step):.2e} {time.time() - t0:.0f}s", flush=True)

    model.eval()
    vimg, vcaps, _ = build_pool(args.seed, 300, split="val")
    n_tir = 300  # the first 300 val images are the TIR scenes
    texts = [c for cs in vcaps[:n_tir] for c in cs]
    gt = [i for i, cs in enumerate(vcaps[:n_tir]) for _ in cs]
    r = recall_t2i(model, tok, vimg[:n_tir], texts, gt, args.context)
    print(f"val TIR text→image (gallery {n_tir}, chance R@1 {100 / n_tir:.2f}%): "
          + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)

    save_clip_dir(model, tok, args.out, image_size=64)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    size = sum(f.stat().st_size for f in args.out.iterdir()) / 1e6
    print(f"saved {args.out} ({size:.1f} MB) in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
