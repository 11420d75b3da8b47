"""Exact inner-product search over the in-memory gallery rows (numpy; no second copy of the rows).

One BLAS product per block of queries over the one float32 matrix the index holds, then an O(n)
selection of the top k and one small sort (``calib.rerank.top_k_desc``): ties go to the lower
position, as everywhere else in calibclip. For one query this is numpy's matrix-vector product,
which scans faster than ``faiss.IndexFlatIP`` and needs no copy of the rows in a FAISS index
(``benchmarks/exact_search.py``).
"""

from __future__ import annotations

import numpy as np

from calibclip.blas import search_blas
from calibclip.calib.rerank import top_k_desc

# Score-block size per product: queries × rows ≤ this many floats (64 MB).
BLOCK_FLOATS = 1 << 24


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (m, k) float32, positions (m, k) int64) of the k largest inner products per query."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    m, n = len(queries), len(vectors)
    k = max(0, min(k, n))
    scores, pos = np.zeros((m, k), np.float32), np.zeros((m, k), np.int64)
    if k == 0:
        return scores, pos
    step = max(1, BLOCK_FLOATS // n)
    for a in range(0, m, step):
        b = min(m, a + step)
        with search_blas(b - a):
            s = queries[a:b] @ vectors.T
        top = top_k_desc(s, k)
        pos[a:b], scores[a:b] = top, np.take_along_axis(s, top, 1)
    return scores, pos
