"""Seconds per RTD optimisation step: calibclip's trainer step vs a plain reference loop.

Both run the same model (random weights), the same triplets, batch size, accumulation and
precision, and compute the same loss (spec rtd.md §2). The plain loop is what one writes first:
every step it encodes T_r (for φ), T_t and T_r (as keys) with the frozen tower in three separate
passes, the two query groups in two passes, and uses the default AdamW. calibclip's step encodes
each anchor text once per run (precomputed cache, its one-off cost printed separately), runs both
query groups in one pass, and uses the fused AdamW on CUDA.

    python benchmarks/rtd_step.py                       # tiny config, a few steps (CPU-friendly)
    python benchmarks/rtd_step.py --configs tiny,base   # + ViT-B/16-size text tower (512 wide, 12 layers)
    python benchmarks/rtd_step.py --configs base --device cuda --amp --steps 10

Measured on the shared 2-core dev machine, 1 thread, fp32 (noisy): tiny 1.37x-1.76x; base
(63.4M-parameter text tower, 1 timed step) 79.2 → 55.3 s/step = 1.43x, one-off cache 43.6 s for
~1000 texts. Not measured on a GPU yet. Both implementations print identical loss sequences.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from calibclip.backends.hf_clip import HFClipEncoder  # noqa: E402
from calibclip.cir.rtd import RTDConfig, make_trainable_tower, make_triplets, noise_for, rtd_loss  # noqa: E402
from calibclip.cir.rtd.train import (BatchOrder, autocast_for, build_anchor_cache, make_optimizer,  # noqa: E402
                                     optimisation_step)
from calibclip.cir.rtd.triplets import TripletGenConfig  # noqa: E402
from calibclip.tokenizer import build_clip_tokenizer  # noqa: E402

CONFIGS = {  # text tower sizes; the image tower is kept tiny (RTD never runs it)
    "tiny": dict(width=32, layers=2, heads=4, projection_dim=16, vocab_size=None),
    "base": dict(width=512, layers=12, heads=8, projection_dim=512, vocab_size=49408),  # ViT-B/16 text tower
}


def captions(n: int, seed: int) -> list[str]:
    """Varied captions built from the generator's lexicon, so every caption yields a triplet."""
    g = TripletGenConfig()
    rng = random.Random(seed)
    adj = [w for grp in g.adjective_groups for w in grp]
    nouns = [w for grp in g.noun_groups for w in grp]
    return [f"a {rng.choice(adj)} {rng.choice(nouns)} next to a {rng.choice(adj)} {rng.choice(nouns)} "
            f"in the {rng.choice(nouns)}" for _ in range(n)]


def build_encoder(kind: str, device: str, tmp: Path) -> HFClipEncoder:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    c = CONFIGS[kind]
    tok = build_clip_tokenizer(captions(400, 0), tmp / kind, num_merges=300)
    w = c["width"]
    text = dict(vocab_size=c["vocab_size"] or len(tok), hidden_size=w, intermediate_size=4 * w,
                num_hidden_layers=c["layers"], num_attention_heads=c["heads"], max_position_embeddings=77,
                eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.eos_token_id,
                projection_dim=c["projection_dim"])
    vision = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, image_size=32,
                  patch_size=8, projection_dim=c["projection_dim"])
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=c["projection_dim"]))
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return HFClipEncoder(model, tok, proc, name=f"random-{kind}", device=device)


def make_phi(enc: HFClipEncoder) -> torch.nn.Module:
    d = enc.dim  # the spec's φ: Linear(D,4D) GELU Dropout Linear(4D,4D) GELU Dropout Linear(4D,D_tok)
    return torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(4 * d, 4 * d), torch.nn.GELU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(4 * d, enc.token_dim)).to(enc.device).eval().requires_grad_(False)


def sync(enc: HFClipEncoder) -> None:
    if enc.device.type == "cuda":
        torch.cuda.synchronize()


def plain_step(enc, tower, phi, triplets, order, cfg, step, opt, autocast) -> float:
    """The reference loop: straightforward per-step encoding of every text group."""
    def enc_texts(texts, model=None, pseudo=None):
        ids, mask = enc.tokenize(texts)
        return enc.text_tower(ids.to(enc.device), mask.to(enc.device), pseudo_tokens=pseudo, text_model=model).embeds

    total = 0.0
    for m in range(cfg.accum):
        batch = [triplets[i] for i in order.take((step * cfg.accum + m) * cfg.batch_size, cfg.batch_size)]
        u, eps = noise_for(cfg, step, m, len(batch), enc.dim)
        with autocast():
            with torch.no_grad():
                r = enc_texts([t.reference for t in batch]).float()
                k_t = enc_texts([t.target for t in batch]).float()
                k_r = enc_texts([t.reference for t in batch]).float()
                s = phi(r + cfg.sigma * u.to(enc.device) * eps.to(enc.device))
            q_m = enc_texts([cfg.prompt.format(t.conditioning) for t in batch], tower, s)
            q_r = enc_texts([cfg.ref_prompt] * len(batch), tower, s)
            loss = rtd_loss(torch.cat([q_m, q_r]), torch.cat([k_t, k_r]), cfg.tau)
        (loss / cfg.accum).backward()
        total += loss.item()
    opt.step()
    opt.zero_grad()
    return total / cfg.accum


def time_steps(name, enc, phi, triplets, cfg, scaler, autocast, args) -> float:
    """Seconds per optimisation step of one implementation (after ``args.warmup`` untimed steps)."""
    torch.manual_seed(0)
    tower = make_trainable_tower(enc).train()
    order = BatchOrder(len(triplets), cfg.seed)
    if name == "plain":
        opt = torch.optim.AdamW(tower.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def run(step: int) -> float:
            return plain_step(enc, tower, phi, triplets, order, cfg, step, opt, autocast)
    else:
        opt = make_optimizer(tower, cfg)
        t = time.perf_counter()
        anchor = build_anchor_cache(enc, triplets, cfg, autocast, progress=False)
        sync(enc)
        print(f"  calibclip one-off anchor cache: {time.perf_counter() - t:.2f} s")

        def run(step: int) -> float:
            return optimisation_step(enc, tower, phi, triplets, order, cfg, step, opt, scaler, autocast, anchor)
    losses = [run(s) for s in range(args.warmup)]
    sync(enc)
    t = time.perf_counter()
    losses += [run(args.warmup + s) for s in range(args.steps)]
    sync(enc)
    per_step = (time.perf_counter() - t) / args.steps
    print(f"  {name:>9}: {per_step:.3f} s/step   losses {', '.join(f'{x:.3f}' for x in losses)}")
    return per_step


def bench(kind: str, args: argparse.Namespace, tmp: Path) -> None:
    enc = build_encoder(kind, args.device, tmp)
    enc.model.requires_grad_(False)
    phi = make_phi(enc)
    n_trip = max(2 * args.batch_size * args.accum * (args.steps + args.warmup), 512)
    triplets = make_triplets(captions(n_trip, 1), seed=0)[0]
    cfg = RTDConfig(batch_size=args.batch_size, accum=args.accum, amp=args.amp)
    autocast, needs_scaler = autocast_for(enc, cfg)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
    n_params = sum(p.numel() for p in make_trainable_tower(enc).parameters())
    print(f"[{kind}] text tower {n_params / 1e6:.1f}M params, {len(triplets)} triplets, batch {args.batch_size} x "
          f"accum {args.accum}, device {enc.device}, amp {args.amp}")

    results = {}
    for name in ("plain", "calibclip"):
        results[name] = time_steps(name, enc, phi, triplets, cfg, scaler, autocast, args)
    print(f"  speed-up calibclip vs plain: {results['plain'] / results['calibclip']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny", help="comma list of: " + ", ".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", action="store_true", help="mixed precision for both (CUDA only)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machines: keep 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.configs.split(","):
            bench(kind.strip(), args, Path(tmp))


if __name__ == "__main__":
    main()
