"""Metric computation time on a COCO-sized 25k-caption × 5k-image random similarity matrix.

Compares `calibclip.eval.metrics` (batched, chunked) with a straightforward per-query Python
implementation (argsort each row / column, look up the positive) measured in the same run, and
checks both give identical numbers. Prints the speed-up (loop time / ours) as min/median/max over
``--repeats`` alternated rounds, with the machine.

    python benchmarks/eval_metrics.py [--texts 25000] [--images 5000] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse

from _common import machine, paired, spread  # noqa: E402  (puts src/ on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from calibclip.eval.metrics import tbpr_metrics, tir_metrics  # noqa: E402


def naive_tir(sims: np.ndarray, text_image: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Per-query loop: stable argsort of each row (t2i) and each column (i2t)."""
    n_t, n_i = sims.shape
    t2i = np.empty(n_t, np.int64)
    for t in range(n_t):
        order = np.argsort(-sims[t], kind="stable")
        t2i[t] = np.flatnonzero(order == text_image[t])[0]
    i2t = np.empty(n_i, np.int64)
    for i in range(n_i):
        order = np.argsort(-sims[:, i], kind="stable")
        i2t[i] = np.flatnonzero(text_image[order] == i)[0]
    out = {f"t2i_R@{k}": float((t2i < k).mean() * 100) for k in ks}
    out.update({f"i2t_R@{k}": float((i2t < k).mean() * 100) for k in ks})
    return out


def naive_tbpr(sims: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray) -> dict[str, float]:
    """Per-query loop: argsort, matches, AP and INP as IRRA defines them."""
    aps, inps, r1 = [], [], []
    for q in range(sims.shape[0]):
        order = np.argsort(-sims[q], kind="stable")
        hits = np.flatnonzero(g_pids[order] == q_pids[q]) + 1
        aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
        inps.append(len(hits) / hits[-1])
        r1.append(hits[0] == 1)
    return {"R@1": float(np.mean(r1) * 100), "mAP": float(np.mean(aps) * 100), "mINP": float(np.mean(inps) * 100)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=25000)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    rng = np.random.default_rng(0)
    sims = rng.random((args.texts, args.images), dtype=np.float32)
    text_image = np.arange(args.texts) % args.images  # 5 captions per image
    print(machine())
    print(f"similarity matrix {args.texts}×{args.images} float32 ({sims.nbytes / 2**20:.0f} MiB), "
          f"{args.threads} thread(s), {args.repeats} rounds")

    # TBPR on the same matrix: texts are queries, images the gallery, 5 images per person id.
    g_pids = np.arange(args.images) // 5
    q_pids = g_pids[text_image]
    cases = [("TIR t2i+i2t  R@1/5/10", lambda: tir_metrics(sims, text_image), lambda: naive_tir(sims, text_image)),
             ("TBPR R@K+mAP+mINP", lambda: tbpr_metrics(sims, q_pids, g_pids),
              lambda: naive_tbpr(sims, q_pids, g_pids))]
    for name, ours_fn, ref_fn in cases:
        ours, ref = ours_fn(), ref_fn()
        assert all(abs(ours[k] - ref[k]) < 1e-6 for k in ref), (ours, ref)
        t_ref, t_ours = paired(ref_fn, ours_fn, args.repeats, warmup=False)
        speed = [r / o for r, o in zip(t_ref, t_ours)]
        print(f"{name:22s} ours {np.median(t_ours):6.2f} s   per-query loop {np.median(t_ref):6.2f} s   "
              f"speed-up min/med/max {spread(speed)}x   (identical numbers)")


if __name__ == "__main__":
    main()
