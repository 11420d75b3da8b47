"""Calibrated vs plain evaluation scoring, per query, in the same process (issue 21.4).

    python benchmarks/calib_eval.py [--queries 6156] [--gallery 3074] [--repeats 3]

CUHK-PEDES-sized test split (6,156 captions, 3,074 images, D=512, random unit features with
person ids, 4 images per id; ``--noise`` 2.5 puts plain R@1 near 75 and mAP near 52, IRRA-like, with
~10 % of the positives below the top 100, whose ranks are counted over the whole row): the
metrics (R@1/5/10, mAP, mINP) on plain cosine rows
(``FeatureSims``) against the same metrics on the CalibCLIP ranking (``CalibratedSims``: DCC query,
top-100 re-ranked with the CVE features). Also times the former calibrated path
(``discriminative_scores(..., k=n)`` with its full sort of every row) and checks it gives the same
numbers. Ratios are calibrated / plain, min/median/max over ``--repeats`` alternated rounds.
Target: calibrated <= 1.5x plain.
"""

from __future__ import annotations

import argparse
import statistics

from _common import machine, paired, spread, unit  # noqa: E402  (puts src/ on sys.path)

import numpy as np  # noqa: E402

from calibclip.calib import CalibConfig  # noqa: E402
from calibclip.eval.metrics import tbpr_metrics  # noqa: E402
from calibclip.eval.scoring import CalibratedSims, FeatureSims, FullSortSims  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=6156)
    ap.add_argument("--gallery", type=int, default=3074)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--noise", type=float, default=2.5, help="per-item noise around each person's centre")
    args = ap.parse_args()
    print(machine())
    rng = np.random.default_rng(0)
    g_pids = np.arange(args.gallery) // 4
    q_pids = rng.integers(0, g_pids.max() + 1, args.queries)
    centres = unit(rng, g_pids.max() + 1, args.dim)
    g = centres[g_pids] + args.noise * unit(rng, args.gallery, args.dim)
    q = centres[q_pids] + args.noise * unit(rng, args.queries, args.dim)
    g, q = g / np.linalg.norm(g, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
    g_cve = g + 0.05 * unit(rng, args.gallery, args.dim)
    q_dcc = q + 0.3 * unit(rng, args.queries, args.dim)
    g_cve /= np.linalg.norm(g_cve, axis=1, keepdims=True)
    q_dcc /= np.linalg.norm(q_dcc, axis=1, keepdims=True)
    cfg = CalibConfig()
    plain_src, calib_src = FeatureSims(q, g), CalibratedSims(q, q_dcc, g, g_cve, cfg)
    former_src = FullSortSims(calib_src)  # the former path: discriminative_scores(..., k=n)

    def former() -> dict:
        return tbpr_metrics(former_src, q_pids, g_pids)

    ours_m, former_m = tbpr_metrics(calib_src, q_pids, g_pids), former()
    assert ours_m == former_m, (ours_m, former_m)
    plain_m = tbpr_metrics(plain_src, q_pids, g_pids)
    print("plain      " + "  ".join(f"{k} {v:.2f}" for k, v in plain_m.items()))
    print("calibrated " + "  ".join(f"{k} {v:.2f}" for k, v in ours_m.items()))
    print(f"{args.queries} queries x {args.gallery} images, D={args.dim}, rerank_k={cfg.rerank_k}; "
          f"calibrated metrics identical to the former path: {ours_m == former_m}")
    tp, tc = paired(lambda: tbpr_metrics(plain_src, q_pids, g_pids), lambda: tbpr_metrics(calib_src, q_pids, g_pids),
                    args.repeats)
    tp2, tf = paired(lambda: tbpr_metrics(plain_src, q_pids, g_pids), former, args.repeats, warmup=False)
    per = 1e3 / args.queries
    print(f"plain evaluation       {statistics.median(tp + tp2) * per:8.3f} ms/query")
    print(f"calibrated (ours)      {statistics.median(tc) * per:8.3f} ms/query  ratio to plain min/med/max "
          f"{spread([c / p for p, c in zip(tp, tc)])}x  (target <= 1.5x)")
    print(f"calibrated (former)    {statistics.median(tf) * per:8.3f} ms/query  ratio to plain min/med/max "
          f"{spread([f / p for p, f in zip(tp2, tf)])}x")


if __name__ == "__main__":
    main()
