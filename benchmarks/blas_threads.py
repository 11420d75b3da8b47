"""Text-encoder pass right after a gallery product: BLAS threads left spinning vs controlled (issue 21.3).

    python benchmarks/blas_threads.py [--n 100000] [--repeats 3] [--queries 10]

A search service alternates a numpy product over the gallery (q @ Gᵀ, OpenBLAS) with the next
query's text pass (torch, its own OpenMP threads). OpenBLAS worker threads busy-wait for a while
after a product and take the cores torch needs. Measured in one process, alternated:
baseline = numpy product with its default threads, then the text pass;
ours = the product inside ``calibclip.blas.search_blas()`` (threadpoolctl), then the text pass.
Prints the text pass time after each (ratio ours / baseline; < 1 is better) and the product's own time.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import machine, paired, ratio_line, spread  # noqa: E402  (puts src/ on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from calibclip.blas import search_blas  # noqa: E402

from calib_overhead import QUERIES, base_like_encoder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=10)
    args = ap.parse_args()
    print(machine())
    enc = base_like_encoder("cpu")
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.n, enc.dim), dtype=np.float32)
    texts = (QUERIES * (args.queries // len(QUERIES) + 1))[:args.queries]
    text_s: dict[str, list[float]] = {"base": [], "ours": []}
    prod_s: dict[str, list[float]] = {"base": [], "ours": []}

    def run(name: str, limited: bool) -> None:
        for t in texts:
            q = enc.encode_texts([t])
            t0 = time.perf_counter()
            if limited:
                with search_blas(len(q)):
                    q @ gallery.T
            else:
                q @ gallery.T
            t1 = time.perf_counter()
            enc.encode_texts([t])  # the next query's text pass, right after the product
            text_s[name].append(time.perf_counter() - t1)
            prod_s[name].append(t1 - t0)

    with torch.inference_mode():
        tb, tc = paired(lambda: run("base", False), lambda: run("ours", True), args.repeats)
    print(f"gallery {args.n:,}x{enc.dim}, text tower 512x12, torch threads {torch.get_num_threads()}, "
          f"{args.queries} queries per round")
    print(ratio_line("search round (product + text pass)", tb, tc))
    k = args.queries
    per = {n: [statistics.median(v[i:i + k]) for i in range(k, len(v), k)] for n, v in text_s.items()}
    print(ratio_line("text pass after the product", per["base"], per["ours"], "< 1.0x"))
    print(f"{'product itself (median ms)':34s} base {statistics.median(prod_s['base']) * 1e3:9.2f} ms  "
          f"ours {statistics.median(prod_s['ours']) * 1e3:9.2f} ms  spread ours {spread(prod_s['ours'])}")


if __name__ == "__main__":
    main()
