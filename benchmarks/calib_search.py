"""CalibCLIP search vs plain search on one index, in the same process (issue 20).

    python benchmarks/calib_search.py [--n 100000] [--repeats 3] [--queries 20] [--profile]

A 100k-image index (D=512, float16 shards of 64 rows as ``calibclip index`` writes them, plain +
CVE feature sets, random unit vectors) is searched with a random ViT-B/16-sized text tower (512
wide, 12 layers): plain search (one text pass + exact top-10) against CalibCLIP search (DCC query:
a second text pass, then re-ranking of the top-100 with the CVE features), one query per call,
alternated, ``--repeats`` rounds. Also times the ranking step alone (``Index.rank`` on
precomputed query features) as a fraction of the plain search.
Targets: calibrated / plain <= 2.1x, ranking step / plain search <= 0.1x.
``--profile`` prints a cProfile of the calibrated searches (top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
from pathlib import Path

from _common import machine, paired, ratio_line, spread, unit  # noqa: E402  (puts src/ on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from calibclip.calib import CalibConfig  # noqa: E402
from calibclip.index import Index  # noqa: E402
from calibclip.index.index import prepare_store  # noqa: E402
from calibclip.index.store import FileStat  # noqa: E402

from calib_overhead import QUERIES, base_like_encoder  # noqa: E402


def make_index(root: Path, enc, n: int, shard_rows: int = 64) -> Index:
    """An index of ``n`` random items with plain + CVE features, written through the store."""
    enc.calibration = CalibConfig()
    store = prepare_store(root, enc, "float16", False, "synthetic")
    rng = np.random.default_rng(0)
    d = enc.dim
    for a in range(0, n, 8192):
        b = min(n, a + 8192)
        plain = unit(rng, b - a, d)
        cve = plain + 0.05 * unit(rng, b - a, d)
        cve /= np.linalg.norm(cve, axis=1, keepdims=True)
        for s in range(0, b - a, shard_rows):
            rows = slice(s, min(b - a, s + shard_rows))
            stats = [FileStat(f"/synthetic/{i:07d}.jpg", 1, 0.0) for i in range(a + rows.start, a + rows.stop)]
            store.add_batch(stats, ["0" * 40] * len(stats), {"plain": plain[rows], "cve": cve[rows]})
    store.close()
    return Index.open(root, enc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=20, help="queries per timed round")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(machine())
    enc = base_like_encoder("cpu")
    cfg = CalibConfig()
    with tempfile.TemporaryDirectory() as tmp:
        index = make_index(Path(tmp) / "bench.idx", enc, args.n)
        index.matrix("plain"), index.matrix("cve")  # opened once, as a server would
        texts = (QUERIES * (args.queries // len(QUERIES) + 1))[:args.queries]

        def plain() -> None:
            enc.calibration = None
            for t in texts:
                index.search(t, k=args.k)

        def calib() -> None:
            enc.calibration = cfg
            for t in texts:
                index.search(t, k=args.k)

        from calibclip.calib.features import text_feature_sets

        enc.calibration = cfg
        feats = [{k: v.cpu().numpy() for k, v in text_feature_sets(enc, [t], cfg).items()} for t in texts]

        def rank_calib() -> None:
            enc.calibration = cfg
            for f in feats:
                index.rank(f, args.k)

        def rank_plain() -> None:
            enc.calibration = None
            for f in feats:
                index.rank({"plain": f["plain"]}, args.k)

        print(f"index: {len(index):,} items, D={enc.dim}, float16 shards of 64 rows; text tower 512x12; "
              f"torch threads {torch.get_num_threads()}; {args.queries} queries per round, k={args.k}")
        with torch.inference_mode():
            tb, tc = paired(plain, calib, args.repeats)
            rp, rc = paired(rank_plain, rank_calib, args.repeats)
        n = args.queries
        print(ratio_line("calibrated search / plain search", [t / n for t in tb], [t / n for t in tc], "<= 2.1x"))
        print(ratio_line("ranking step: calibrated / plain", [t / n for t in rp], [t / n for t in rc]))
        frac = [max(0.0, c - p) / b for p, c, b in zip(rp, rc, tb)]
        print(f"{'re-ranking (calib rank - plain rank)':34s} {statistics.median([c - p for p, c in zip(rp, rc)]) / n * 1e3:9.2f}"
              f" ms/query = fraction of a plain search min/med/max {spread(frac)}x  (target <= 0.1x)")
        if args.profile:
            prof = cProfile.Profile()
            with torch.inference_mode():
                prof.runcall(calib)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue())


if __name__ == "__main__":
    main()
