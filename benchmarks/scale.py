"""Approximate index kinds vs numpy brute force at 10k / 100k / 1M synthetic embeddings (D=512).

    python benchmarks/scale.py                       # 10k,100k,1M (~10 min on 2 cores)
    python benchmarks/scale.py --sizes 10k,100k --kinds ivf-pq,hnsw --threads 2

For every size and index kind: build time, index memory (bytes of the serialised index, which is
what it holds in RAM), single-query latency p50/p99 (one query per call, ``--threads`` OpenMP
threads) and recall@10 against exact search, for a sweep of nprobe (efSearch for HNSW).
The baseline in the same run is numpy brute force (``q @ X.T`` + argpartition); each row prints
its p50 speed-up over it. Data: :func:`calibclip.index.ann.clustered_vectors` (clusters with
low-rank spread: real near neighbours, unlike uniform noise); queries are held-out rows of the
same distribution. Writes ``--out`` JSON and a PNG of p50 latency vs collection size.
Target: 1M vectors, IVF-PQ, p50 < 5 ms with recall@10 ≥ 0.9 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# 2 cores by default; must be set before numpy/faiss start their BLAS/OpenMP pools
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import numpy as np  # noqa: E402

KINDS = {  # label → build_ann arguments
    "ivf-flat": dict(kind="ivf-flat"),
    "ivf-pq": dict(kind="ivf-pq", nbits=8, refine="sq8"),       # PQ64 (8-bit) + SQ8 re-rank: 584 B/vector
    "ivf-pq-fs": dict(kind="ivf-pq", nbits=4, refine="sq8"),    # fast-scan PQ64x4 + SQ8 re-rank: 552 B/vector
    "hnsw": dict(kind="hnsw"),
    "flat": dict(kind="flat"),
}
SWEEP = {"ivf-flat": [8, 16, 32, 64], "ivf-pq": [8, 16, 32, 64], "ivf-pq-fs": [8, 16, 32, 64],
         "hnsw": [16, 32, 64, 128], "flat": [None]}


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in "km" else t) * mult)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def time_queries(search, queries: np.ndarray, warmup: int = 5) -> list[float]:
    """Wall time of one call per query (after a few warm-up calls)."""
    for q in queries[:warmup]:
        search(q[None])
    out = []
    for q in queries:
        t0 = time.perf_counter()
        search(q[None])
        out.append(time.perf_counter() - t0)
    return out


def brute_force(x: np.ndarray, k: int = 10):
    def search(q: np.ndarray) -> np.ndarray:
        s = (q @ x.T)[0]
        top = np.argpartition(-s, k - 1)[:k]
        return top[np.argsort(-s[top])]
    return search


def run_size(n: int, args, ann) -> list[dict]:
    import faiss

    t0 = time.perf_counter()
    data = ann.clustered_vectors(n + args.queries, dim=args.dim, seed=args.seed)
    base, queries = data[:n], data[n:]
    print(f"\n== n={n:,} D={args.dim}: data {time.perf_counter() - t0:.1f}s", flush=True)
    gt = ann.exact_topk(base, queries, 10)
    lat_q = queries[:args.latency_queries if n < 500_000 else max(20, args.latency_queries // 4)]
    bf = time_queries(brute_force(base), lat_q)
    bf50, bf99 = percentiles(bf)
    rows = [dict(n=n, kind="numpy", nprobe=None, build_s=0.0, memory_bytes=int(base.nbytes), p50_ms=bf50,
                 p99_ms=bf99, recall10=1.0, speedup=1.0)]
    print(f"{'numpy brute force':<22} mem {base.nbytes / 2**20:8.1f} MiB  p50 {bf50:8.3f} ms  p99 {bf99:8.3f} ms",
          flush=True)
    for label in args.kinds:
        if label == "hnsw" and n > args.hnsw_max:
            print(f"{label:<22} skipped (n > --hnsw-max {args.hnsw_max:,}: build too slow on few cores)")
            rows.append(dict(n=n, kind=label, skipped=f"n > --hnsw-max {args.hnsw_max}"))
            continue
        t0 = time.perf_counter()
        index = ann.build_ann(base, seed=args.seed, **KINDS[label])
        build_s = time.perf_counter() - t0
        mem = int(faiss.serialize_index(index).nbytes)
        for nprobe in SWEEP[label]:
            if nprobe is not None:
                ann.set_nprobe(index, nprobe)
            _, ids = index.search(queries, 10)
            rec = ann.recall_at_k(ids, gt, 10)
            p50, p99 = percentiles(time_queries(lambda q: index.search(q, 10), queries[:args.latency_queries]))
            rows.append(dict(n=n, kind=label, nprobe=nprobe, build_s=build_s, memory_bytes=mem, p50_ms=p50,
                             p99_ms=p99, recall10=rec, speedup=bf50 / p50, factory=ann.factory_string(
                                 KINDS[label]["kind"], n, args.dim, nbits=KINDS[label].get("nbits", 8),
                                 refine=KINDS[label].get("refine", "none"))))
            print(f"{label + (f' nprobe={nprobe}' if nprobe else ''):<22} build {build_s:7.1f}s  "
                  f"mem {mem / 2**20:8.1f} MiB  p50 {p50:8.3f} ms  p99 {p99:8.3f} ms  "
                  f"recall@10 {rec:.3f}  x{bf50 / p50:.0f} vs numpy", flush=True)
        index = None  # free before the next kind is built
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        # per size: the fastest setting reaching recall@10 ≥ 0.9 (numpy/flat are exact)
        pts = {}
        for r in rows:
            if r["kind"] == kind and "p50_ms" in r and r["recall10"] >= 0.9:
                if r["n"] not in pts or r["p50_ms"] < pts[r["n"]]["p50_ms"]:
                    pts[r["n"]] = r
        if pts:
            ns = sorted(pts)
            ax.plot(ns, [pts[n]["p50_ms"] for n in ns], marker="o", label=kind)
    ax.axhline(5, color="grey", ls=":", lw=1, label="5 ms target")
    ax.set(xscale="log", yscale="log", xlabel="collection size (vectors, D=512)",
           ylabel="single-query p50 latency (ms)",
           title="p50 latency at recall@10 ≥ 0.9 (fastest nprobe per kind)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10k,100k,1M", help="comma list, e.g. 10k,100k")
    p.add_argument("--kinds", default="ivf-flat,ivf-pq,ivf-pq-fs,hnsw", help=f"comma list of {', '.join(KINDS)}")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200, help="held-out queries for recall")
    p.add_argument("--latency-queries", type=int, default=200, help="single queries timed per setting")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hnsw-max", type=parse_size, default=100_000, help="skip HNSW above this size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    p.add_argument("--plot", type=Path, default=None, help="PNG path (default: --out with .png)")
    args = p.parse_args()
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in args.kinds if k not in KINDS]
    if bad:
        p.error(f"--kinds {','.join(bad)}: use {', '.join(KINDS)}")
    import faiss

    from calibclip.index import ann

    faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in [parse_size(s) for s in args.sizes.split(",")]:
        rows += run_size(n, args, ann)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(threads=args.threads, dim=args.dim, cpu_count=os.cpu_count(),
                                            loadavg=os.getloadavg(), rows=rows), indent=1))
    png = args.plot or args.out.with_suffix(".png")
    plot(rows, png)
    print(f"\nwrote {args.out} and {png}")
    for kind in ("ivf-pq", "ivf-pq-fs"):  # smallest nprobe reaching recall@10 ≥ 0.9 at the largest size ≥ 1M
        ok = [r for r in rows if r["kind"] == kind and r["n"] >= 1_000_000 and r.get("recall10", 0) >= 0.9]
        if ok:
            r = ok[0]
            print(f"target (n={r['n']:,}, {kind}, nprobe={r['nprobe']}): p50 {r['p50_ms']:.2f} ms, "
                  f"recall@10 {r['recall10']:.3f} -> {'met' if r['p50_ms'] < 5 else 'missed'} (p50 < 5 ms)")


if __name__ == "__main__":
    main()
