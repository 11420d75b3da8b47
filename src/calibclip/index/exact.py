"""Exact inner-product search over the in-memory gallery rows (numpy; no second copy of the rows).

One BLAS product per block of queries over the one float32 matrix the index holds, then an O(n)
selection of the top k and one small sort (``calib.rerank.top_k_desc``): ties go to the lower
position, as everywhere else in calibclip. For one query this is numpy's matrix-vector product,
which scans faster than ``faiss.IndexFlatIP`` and needs no copy of the rows in a FAISS index
(``benchmarks/exact_search.py``).

Where a torch pass follows the search (``spare_torch``: text, image and composed search, the
server), a product of a few query rows runs on one BLAS thread (``calibclip.blas``: no OpenBLAS
pool left spinning on the cores the next encoder pass needs), so on a large gallery the rows are
split over the usable cores instead: one Python thread per slice, each a one-thread product
(numpy releases the GIL). Each score is the same dot product either way, so the result is
bit-identical; measured on 2 cores, 1M × 512 rows: 96 ms split vs 178 ms on one thread and 96 ms
for numpy's own 2 threads. A search of vectors alone keeps numpy's BLAS threads: on a small
gallery (10k rows: ~0.4 ms) waking a worker thread costs as much as the product.
"""

from __future__ import annotations

import numpy as np

from calibclip.calib.rerank import gallery_product, top_k_scored
from calibclip.cores import torch_threads

# Score-block size per product: queries × rows ≤ this many floats (64 MB).
BLOCK_FLOATS = 1 << 24


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, spare_torch: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(scores (m, k) float32, positions (m, k) int64) of the k largest inner products per query.

    ``spare_torch``: a torch pass comes next, so few-query products leave no BLAS pool spinning
    (see the module docstring); the scores are the same either way.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    m, n = len(queries), len(vectors)
    k = max(0, min(k, n))
    if k == 0:
        return np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64)
    step = max(1, BLOCK_FLOATS // n)
    if m <= step:  # one block (every single query): no copies into result arrays
        return _block(vectors, queries, k, spare_torch)[::-1]
    scores, pos = np.zeros((m, k), np.float32), np.zeros((m, k), np.int64)
    for a in range(0, m, step):
        b = min(m, a + step)
        pos[a:b], scores[a:b] = _block(vectors, queries[a:b], k, spare_torch)
    return scores, pos


def _block(vectors: np.ndarray, queries: np.ndarray, k: int, spare_torch: bool) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) of the top k for one block of queries."""
    if spare_torch:
        return top_k_scored(gallery_product(queries, vectors), k)
    s = queries @ vectors.T
    if len(queries) == 1:  # one row runs on one torch thread anyway
        return top_k_scored(s, k)
    with torch_threads(1):  # beside the BLAS pool still spinning: 32 x 10k top-k 15.9 -> 4.6 ms
        return top_k_scored(s, k)
