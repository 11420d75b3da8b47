"""Exact search through ``Index.search_vectors`` vs numpy brute force, and the memory it holds (issue 21.2).

    python benchmarks/exact_search.py [--sizes 10k,100k,1M] [--repeats 3] [--queries 50] [--batch 32]

For each size an index of random unit vectors (D=512, ``--dtype`` shards) is written through the
store and opened; the baseline in the same process is numpy brute force on the same float32 matrix
(``q @ X.T`` + argpartition + sort of the top 10, numpy's default BLAS threads). Ours runs as a
search of vectors alone (numpy's BLAS threads) and with ``spare_torch`` (few-query products on one
BLAS thread per slice, as text search and the server run it). Both answer
``--queries`` single queries per round (then batches of ``--batch``), alternated over ``--repeats``
rounds; the ratio printed is baseline time / ours (>= 1.0 means ours is at least as fast).
Also prints the resident memory the opened index adds (after its first search) against the bytes of
its float32 rows, and the same for the former FAISS ``IndexFlatIP`` copy, for comparison.
Targets: speed >= 1.0x numpy at 10k-1M, resident <= 1.1x the rows.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import types
from pathlib import Path

from _common import machine, paired, spread  # noqa: E402  (puts src/ on sys.path)

import numpy as np  # noqa: E402

from calibclip.index import Index  # noqa: E402
from calibclip.index.index import prepare_store  # noqa: E402
from calibclip.index.store import FileStat  # noqa: E402


def rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in "km" else t) * mult)


def write_index(root: Path, n: int, dim: int, dtype: str, shard_rows: int = 4096) -> None:
    enc = types.SimpleNamespace(name="synthetic", source="", fingerprint="", dim=dim, calibration=None)
    store = prepare_store(root, enc, dtype, False, "synthetic")
    rng = np.random.default_rng(0)
    for a in range(0, n, shard_rows):
        b = min(n, a + shard_rows)
        x = rng.standard_normal((b - a, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        stats = [FileStat(f"/synthetic/{i:08d}.jpg", 1, 0.0) for i in range(a, b)]
        store.add_batch(stats, ["0" * 40] * len(stats), {"plain": x}, dtype=dtype)
    store.close()


def numpy_brute(x: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    s = q @ x.T
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1), 1)


def run(n: int, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench.idx"
        write_index(root, n, args.dim, args.dtype)
        warm = Index.open(root)  # modules and libraries loaded before the memory is read
        warm.search_vectors(np.ones((1, args.dim), np.float32), 10)
        del warm
        gc.collect()
        before = rss()
        index = Index.open(root)
        rng = np.random.default_rng(1)
        queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
        index.search_vectors(queries[:1], 10)
        held = rss() - before
        x = index.embeddings()
        rows = x.nbytes
        batches = [queries[i:i + args.batch] for i in range(0, len(queries), args.batch)]
        agree = np.mean([np.array_equal(index.search_vectors(q[None], 10)[1][0], numpy_brute(x, q[None])[0])
                         for q in queries[:10]])
        print(f"\n== n={n:,} D={args.dim} {args.dtype} shards: opened index holds {held / 2**20:.0f} MiB for "
              f"{rows / 2**20:.0f} MiB of float32 rows = {held / rows:.2f}x (target <= 1.1x); "
              f"same top-10 as numpy on {agree:.0%} of 10 queries")
        for label, qs in (("1 query per call", [q[None] for q in queries]), (f"{args.batch} per call", batches)):
            for mode, spare in (("vectors", False), ("spare_torch", True)):
                tb, tc = paired(lambda: [numpy_brute(x, q) for q in qs],
                                lambda: [index.search_vectors(q, 10, spare_torch=spare) for q in qs], args.repeats)
                per_q = len(queries)
                speed = [b / c for b, c in zip(tb, tc)]
                print(f"  {label:18s} {mode:11s} numpy {np.median(tb) / per_q * 1e3:8.3f} ms/query  ours "
                      f"{np.median(tc) / per_q * 1e3:8.3f} ms/query  speed numpy/ours min/med/max {spread(speed)}x"
                      + ("  (target >= 1.0x)" if not spare else "  (one BLAS thread per slice: text search)"))
        if args.faiss:
            import faiss

            gc.collect()
            before = rss()
            flat = faiss.IndexFlatIP(args.dim)
            flat.add(x)
            extra = rss() - before
            tb, tc = paired(lambda: [numpy_brute(x, q[None]) for q in queries],
                            lambda: [flat.search(q[None], 10) for q in queries], args.repeats)
            print(f"  former IndexFlatIP: +{extra / 2**20:.0f} MiB copy of the rows; 1 query per call "
                  f"speed numpy/faiss min/med/max {spread([b / c for b, c in zip(tb, tc)])}x")
            del flat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10k,100k")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--faiss", action="store_true", help="also time the former faiss.IndexFlatIP path")
    args = ap.parse_args()
    print(machine())
    for size in args.sizes.split(","):
        run(parse_size(size), args)


if __name__ == "__main__":
    main()
