"""Discriminative similarity and re-ranking (docs/methods/calibclip.md).

s0 = t·v (plain features); C_K = top-K by s0 (reliable candidate space); inside C_K
s = s0 + λ·(t̃·ṽ) with t̃ the DCC query and ṽ the CVE gallery feature; items outside C_K keep
their s0 order below the candidates. Features are L2-normalised, so dot products are cosines.
Ties are broken by ascending gallery index (the evaluation's tie rule).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from calibclip.blas import SINGLE_THREAD_ROWS, search_blas
from calibclip.calib.config import CalibConfig
from calibclip.cores import parallel_map, pool_workers, torch_threads
from calibclip.ranks import MISSING, positions

# candidate_disc's CSR pattern is built in one place and valid by construction; torch warns once per process
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)

# Galleries from this many rows have their few-query search products split over the usable cores
# (measured at 10k x 512, one query: 1.18 -> 0.94 ms; smaller galleries stay whole, where waking a
# worker thread is a larger share of the product; not measured there).
SPLIT_ROWS = 1 << 13
_CHUNK_FLOATS = 1 << 24  # ~64 MB of float32 per query chunk
_SAMPLE_STRIDE = 8  # top_k_set's threshold sample: every 8th item of a row
_RANK_ROWS = 512  # queries per block: one worker's unit of work (its s0 ~6 MB at n=3k)


def sort_desc_by_id(cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row of (cols, vals) by vals descending, ties by ascending column index."""
    order = np.argsort(-vals, axis=1)  # any order is right for rows without equal values; the rest redone below
    cols_s, vals_s = np.take_along_axis(cols, order, 1), np.take_along_axis(vals, order, 1)
    tied = (vals_s[:, 1:] == vals_s[:, :-1]).any(axis=1)
    if tied.any():  # equal values are in no set order above; put those rows' ties in id order
        c, v = cols[tied], vals[tied]
        by_id = np.argsort(c, axis=1, kind="stable")
        c, v = np.take_along_axis(c, by_id, 1), np.take_along_axis(v, by_id, 1)
        again = np.argsort(-v, axis=1, kind="stable")
        cols_s[tied], vals_s[tied] = np.take_along_axis(c, again, 1), np.take_along_axis(v, again, 1)
    return cols_s, vals_s


def top_k_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """(m, n) → (m, k) column indices of the k largest per row, descending, ties by ascending index."""
    return top_k_scored(scores, k)[0]


def top_k_scored(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``top_k_desc`` and the scores it picked: (ids (m, k) int64, values (m, k) float32)."""
    m, n = scores.shape
    k = min(k, n)
    if k == 0:
        return np.zeros((m, 0), np.int64), np.zeros((m, 0), np.float32)
    if k == n:
        top = np.argsort(-scores, axis=1, kind="stable")
        return top, np.take_along_axis(scores, top, 1)
    # O(n) selection of the k largest, already in descending order (torch.topk: several times faster
    # than numpy's argpartition on float32 rows, and threaded over rows); equal values come in no set
    # order, so rows with any are put in the tie rule's order below
    rows = np.require(scores, requirements=["C", "W"])  # torch.from_numpy needs a writable buffer (no copy if so)
    vals_t, top_t = torch.topk(torch.from_numpy(rows), k, dim=1, sorted=True)
    top, vals = top_t.numpy(), vals_t.numpy()
    inside = (vals[:, 1:] == vals[:, :-1]).any(axis=1)  # equal values within the k: order them by id
    if inside.any():
        top[inside], vals[inside] = sort_desc_by_id(top[inside], vals[inside])
    kth = vals[:, -1:]
    # the selection picks arbitrarily among values tied at the boundary; redo those rare rows exactly
    tied = (scores == kth).sum(axis=1) > (vals == kth).sum(axis=1)
    if tied.any():
        top[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]  # the same values, lower ids
    return top, vals


def top_k_set(scores: np.ndarray, k: int) -> np.ndarray:
    """(m, n) → (m, k) column indices of the k largest per row, in no particular order.

    The same set as ``top_k_desc`` (ties at the boundary go to the lower index) without its sort.
    On rows much longer than k the selection runs on the few items at or above a threshold read
    from a strided sample of each row (``_sample_threshold``); rows where fewer than k items pass
    it, and short rows, are selected over the whole row.
    """
    scores = np.require(scores, np.float32, ["C", "W"])  # torch.from_numpy needs a writable buffer
    m, n = scores.shape
    k = min(k, n)
    if k == 0 or k == n:
        return top_k_desc(scores, k)
    if n < _SAMPLE_STRIDE * 2 * k:
        return _select(scores, np.broadcast_to(np.arange(n), scores.shape), k)
    thresh = _sample_threshold(scores, k)
    mask = scores >= thresh[:, None]
    count = np.count_nonzero(mask, axis=1)
    out = np.empty((m, k), np.int64)
    short = count < k
    if short.any():
        out[short] = _select(scores[short], np.broadcast_to(np.arange(n), (int(short.sum()), n)), k)
        mask[short] = False
        count[short] = 0
    if short.all():
        return out
    # the passing items of each row, packed left in ascending column order (padding: -inf, never chosen)
    flat = np.flatnonzero(mask)
    row, col = np.divmod(flat, n)
    starts = np.zeros(m + 1, np.int64)
    np.cumsum(count, out=starts[1:])
    slot = np.arange(len(flat)) - starts[row]
    width = int(count.max())
    vals = np.full((m, width), -np.inf, np.float32)
    ids = np.zeros((m, width), np.int64)
    vals[row, slot] = scores.ravel()[flat]
    ids[row, slot] = col
    keep = ~short
    out[keep] = _select(vals[keep], ids[keep], k)
    return out


def _sample_threshold(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, a value at or below which ≥ k items of the row lie in all but rare rows: the
    r-th largest of every ``_SAMPLE_STRIDE``-th item, with r = 2k/stride + 4 (expected passing
    items ≈ 2k + 4·stride; too few only some three standard deviations below that)."""
    sample = np.ascontiguousarray(scores[:, ::_SAMPLE_STRIDE])
    r = min(sample.shape[1], -(-2 * k // _SAMPLE_STRIDE) + 4)
    return torch.topk(torch.from_numpy(sample), r, dim=1, sorted=False).values.min(dim=1).values.numpy()


def _select(vals: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """ids of the k largest vals per row; ties at the boundary to the earlier column (ids ascend along rows)."""
    vals = np.require(vals, np.float32, ["C", "W"])
    part = torch.topk(torch.from_numpy(vals), k, dim=1, sorted=False).indices.numpy()
    chosen = np.take_along_axis(vals, part, 1)
    kth = chosen.min(axis=1, keepdims=True)
    tied = (vals == kth).sum(axis=1) > (chosen == kth).sum(axis=1)  # topk chose among boundary ties
    if tied.any():
        part[tied] = np.argsort(-vals[tied], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, part, 1)


def rerank_candidates(s0: np.ndarray, cand: np.ndarray, disc: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """s = s0[cand] + lam·disc for candidates (m, K) → (candidates sorted by s desc, sorted s)."""
    s = np.take_along_axis(s0, cand, 1) + np.float32(lam) * disc
    ids, s = sort_desc_by_id(cand, s)
    return ids, s.astype(np.float32)


def candidate_disc(q_dcc: np.ndarray, g_cve: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """(b, K) cos(t̃, ṽ) of each query's candidates: only those dot products, read in place.

    A sampled product (``torch.sparse.sampled_addmm``: q_dcc @ g_cveᵀ at a CSR pattern of the
    candidates) reads each candidate's CVE row where it lies; gathering the rows first copies
    2 KB per candidate, ~3x slower. Each value is its own dot product, so it does not depend on
    the other candidates, their order, or the threads. Columns are passed ascending, as CSR wants.
    """
    b, k = cand.shape
    if b == 0 or k == 0:
        return np.zeros(cand.shape, np.float32)
    ascending = k == 1 or bool((cand[:, 1:] > cand[:, :-1]).all())
    order = None if ascending else np.argsort(cand, axis=1)
    ids = torch.from_numpy(np.ascontiguousarray(cand if order is None else np.take_along_axis(cand, order, 1))
                           .reshape(-1))
    pattern = torch.sparse_csr_tensor(torch.arange(0, b * k + 1, k), ids, torch.zeros(b * k), size=(b, len(g_cve)),
                                      check_invariants=False)
    with torch_threads(1):  # a few thousand dots; torch's team left spinning would slow the next product 2x
        by_id = torch.sparse.sampled_addmm(pattern, torch.from_numpy(np.ascontiguousarray(q_dcc, np.float32)),
                                           torch.from_numpy(np.ascontiguousarray(g_cve, np.float32)).T, beta=0.0)
    vals = by_id.values().numpy().reshape(b, k)
    if order is None:
        return vals
    out = np.empty(cand.shape, np.float32)
    np.put_along_axis(out, order, vals, axis=1)
    return out


def gallery_product(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """queries @ vectors.T for a search; few queries on many rows: row slices on parallel threads.

    Runs under ``search_blas`` (one BLAS thread for few queries, so no spinning BLAS pool is left
    behind to slow the next text pass): a gallery of at least ``SPLIT_ROWS`` rows is then split
    over the usable cores, one one-thread product per slice (numpy releases the GIL), each score
    the same dot product.
    """
    with search_blas(len(queries)):
        n = len(vectors)
        if len(queries) > SINGLE_THREAD_ROWS or n < SPLIT_ROWS:
            return queries @ vectors.T
        workers = min(4, pool_workers())
        if workers == 1:
            return queries @ vectors.T
        cuts = np.linspace(0, n, workers + 1).astype(np.int64)
        out = np.empty((len(queries), n), np.float32)

        def part(i: int) -> None:
            a, b = cuts[i], cuts[i + 1]
            np.matmul(queries, vectors[a:b].T, out=out[:, a:b])

        parallel_map(part, range(workers))
        return out


def _chunk(n: int, width: int) -> int:
    return max(1, _CHUNK_FLOATS // max(1, n, width))


def discriminative_scores(q_plain: np.ndarray, q_dcc: np.ndarray, g_plain: np.ndarray, g_cve: np.ndarray,
                          cfg: CalibConfig, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores (m, k) float32, ids (m, k) int64) per query with CalibCLIP re-ranking.

    Ranks 1..K are the candidates C_K ordered by s = s0 + λ·(q_dcc·g_cve); ranks beyond K (when k > K)
    follow in s0 order with their s0 as score, so scores need not decrease across the K boundary.
    With ``cfg.disc_sim`` False this is plain top-k by s0. Chunked over queries.
    """
    q_plain, q_dcc = np.asarray(q_plain, np.float32), np.asarray(q_dcc, np.float32)
    g_plain, g_cve = np.asarray(g_plain, np.float32), np.asarray(g_cve, np.float32)
    m, n = len(q_plain), len(g_plain)
    k = min(k, n)
    scores = np.zeros((m, k), np.float32)
    ids = np.zeros((m, k), np.int64)
    big_k = min(cfg.rerank_k, n)
    step = _chunk(n, big_k * g_plain.shape[1] if n else 1)
    for a in range(0, m, step):
        b = min(m, a + step)
        s0 = gallery_product(q_plain[a:b], g_plain)
        if not cfg.disc_sim or k == 0:
            ids[a:b], scores[a:b] = top_k_scored(s0, k)
            continue
        cand, cand_s = top_k_scored(s0, max(k, big_k))
        head = cand[:, :big_k]
        disc = candidate_disc(q_dcc[a:b], g_cve, head)
        head_ids, head_s = rerank_candidates(s0, head, disc, cfg.lam)
        all_ids = np.concatenate([head_ids, cand[:, big_k:]], axis=1)[:, :k]
        all_s = np.concatenate([head_s, cand_s[:, big_k:]], axis=1)[:, :k]
        ids[a:b], scores[a:b] = all_ids, all_s
    return scores, ids


def discriminative_matrix(q_plain: np.ndarray, q_dcc: np.ndarray, g_plain: np.ndarray, g_cve: np.ndarray,
                          cfg: CalibConfig) -> np.ndarray:
    """(m, n) float32 scores whose descending order is the CalibCLIP ranking (for full-ranking metrics).

    Candidates C_K get s = s0 + λ·(q_dcc·g_cve); every other item gets s0 − offset, with the constant
    offset = 3 + 2·|λ| larger than any gap between cosines, so all of them fall below every candidate
    while keeping their s0 order. With ``cfg.disc_sim`` False this is s0.
    """
    q_plain, q_dcc = np.asarray(q_plain, np.float32), np.asarray(q_dcc, np.float32)
    g_plain, g_cve = np.asarray(g_plain, np.float32), np.asarray(g_cve, np.float32)
    m, n = len(q_plain), len(g_plain)
    out = np.zeros((m, n), np.float32)
    big_k = min(cfg.rerank_k, n)
    step = _chunk(n, big_k * g_plain.shape[1] if n else 1)
    for a in range(0, m, step):
        b = min(m, a + step)
        with search_blas(b - a):
            s0 = q_plain[a:b] @ g_plain.T
        if not cfg.disc_sim or n == 0:
            out[a:b] = s0
            continue
        cand = top_k_desc(s0, big_k)
        disc = candidate_disc(q_dcc[a:b], g_cve, cand)
        block = s0 - np.float32(3.0 + 2.0 * abs(cfg.lam))
        np.put_along_axis(block, cand, np.take_along_axis(s0, cand, 1) + np.float32(cfg.lam) * disc, 1)
        out[a:b] = block
    return out


def _parallel_blocks(m: int, work: Callable[[int, int], None]) -> None:
    """``work(a, b)`` over equal row blocks of at most ``_RANK_ROWS`` rows on the shared worker threads.

    The block count is a multiple of the workers (no worker idles at the end). Inside, numpy's
    BLAS and each worker's torch run on one thread: a multi-threaded OpenBLAS product leaves its
    pool spinning on the cores the workers' next steps need.
    """
    workers = pool_workers()
    blocks = -(-max(1, -(-m // _RANK_ROWS)) // workers) * workers
    cuts = np.linspace(0, m, blocks + 1).astype(np.int64)
    torch.get_num_threads()  # this thread's torch threads are set before a worker lowers the default

    def block(i: int) -> None:
        if cuts[i] < cuts[i + 1]:
            with torch_threads(1):
                work(int(cuts[i]), int(cuts[i + 1]))

    with search_blas(1):
        parallel_map(block, range(blocks))


def _head(s0: np.ndarray, q_dcc: np.ndarray, g_cve: np.ndarray, cfg: CalibConfig, big_k: int) -> np.ndarray:
    """(b, K) the candidates C_K of each row of s0 in their re-ranked (CalibCLIP) order."""
    cand = np.sort(top_k_set(s0, big_k), axis=1)  # ascending ids: what candidate_disc's CSR pattern takes
    disc = candidate_disc(q_dcc, g_cve, cand)
    return rerank_candidates(s0, cand, disc, cfg.lam)[0]


def _gallery_t(g_plain: np.ndarray, g_plain_t: np.ndarray | None) -> np.ndarray:
    return g_plain.T if g_plain_t is None else g_plain_t


def ranking_scores(q_plain: np.ndarray, q_dcc: np.ndarray, g_plain: np.ndarray, g_cve: np.ndarray,
                   cfg: CalibConfig, g_plain_t: np.ndarray | None = None) -> np.ndarray:
    """(m, n) float32 scores ordering each row exactly as ``discriminative_scores(..., k=n)`` ranks it.

    Read with the metrics' tie rule (descending, ties by ascending index). The candidates C_K get
    the pseudo-scores n, n−1, …, n−K+1 in their re-ranked order; every other item keeps its s0, so
    its place below them is s0's order with ties by index — the order ``discriminative_scores``
    gives them — without sorting whole rows. A block whose s0 reaches n−K+1 (never for cosines:
    K < n makes that ≥ 2) is ranked by a full sort instead.

    Blocks of queries run on the shared worker threads (``_parallel_blocks``). Each element is
    the same dot product on any number of threads (OpenBLAS splits sgemm by output tiles, not by
    the summed dimension), so the result does not depend on the cores. ``g_plain_t``:
    ``g_plain.T`` as a C-contiguous array, for callers that rank many blocks against one gallery
    (the product reads it ~10 % faster than the transposed view; the same values).
    """
    q_plain, q_dcc = np.asarray(q_plain, np.float32), np.asarray(q_dcc, np.float32)
    g_plain, g_cve = np.asarray(g_plain, np.float32), np.asarray(g_cve, np.float32)
    m, n = len(q_plain), len(g_plain)
    out = np.zeros((m, n), np.float32)
    big_k = min(cfg.rerank_k, n)
    g_t = _gallery_t(g_plain, g_plain_t)

    def work(a: int, b: int) -> None:
        s0 = out[a:b]  # scored in place: s0 for every item, then the candidates' pseudo-scores
        np.matmul(q_plain[a:b], g_t, out=s0)
        if not cfg.disc_sim or n == 0:  # plain ranking: s0 itself
            return
        cand = _head(s0, q_dcc[a:b], g_cve, cfg, big_k)
        pseudo = np.arange(n, n - big_k, -1, dtype=np.float32)[None, :]
        if big_k < n and s0.max() >= n - big_k + 1:  # not cosines: rank everything explicitly
            in_head = np.zeros(s0.shape, bool)
            np.put_along_axis(in_head, cand, True, axis=1)
            rest = top_k_desc(s0, n)
            rest = rest[~np.take_along_axis(in_head, rest, 1)].reshape(b - a, n - big_k)
            cand = np.concatenate([cand, rest], axis=1)
            pseudo = np.arange(n, 0, -1, dtype=np.float32)[None, :]
        np.put_along_axis(s0, cand, np.broadcast_to(pseudo, cand.shape), axis=1)

    _parallel_blocks(m, work)
    return out


def calibrated_positions(q_plain: np.ndarray, q_dcc: np.ndarray, g_plain: np.ndarray, g_cve: np.ndarray,
                         cfg: CalibConfig, items: np.ndarray, g_plain_t: np.ndarray | None = None) -> np.ndarray:
    """(m, P) 0-based positions of gallery items ``items`` (m, P; -1 = padding → ``ranks.MISSING``)
    in each query's ``discriminative_scores(..., k=n)`` ranking, without ranking whole rows.

    A candidate's position is its place among the re-ranked C_K. Every other item keeps its
    position in the plain s0 ranking (tie rule), since the items above it there are C_K and the
    same non-candidates: one count over its row (``ranks.positions``). Blocks run on the worker
    threads as in ``ranking_scores``; ``g_plain_t`` as there.
    """
    q_plain, q_dcc = np.asarray(q_plain, np.float32), np.asarray(q_dcc, np.float32)
    g_plain, g_cve = np.asarray(g_plain, np.float32), np.asarray(g_cve, np.float32)
    items = np.asarray(items, np.int64).reshape(len(q_plain), -1)
    m, n = len(q_plain), len(g_plain)
    out = np.empty(items.shape, np.int64)
    big_k = min(cfg.rerank_k, n)
    g_t = _gallery_t(g_plain, g_plain_t)

    def work(a: int, b: int) -> None:
        s0 = q_plain[a:b] @ g_t
        its = items[a:b]
        if not cfg.disc_sim or n == 0:
            out[a:b] = positions(s0, its)
            return
        head = _head(s0, q_dcc[a:b], g_cve, cfg, big_k)
        hit = its[:, :, None] == head[:, None, :]  # (b, P, K); padding (-1) matches nothing
        in_head = hit.any(axis=2)
        pos = np.where(in_head, hit.argmax(axis=2), MISSING)
        rest = np.where(in_head, -1, its)
        count = np.nonzero((rest >= 0).any(axis=1))[0]  # rows with an item outside C_K: count only those
        if len(count):
            pos[count] = np.where(rest[count] >= 0, positions(s0[count], rest[count]), pos[count])
        out[a:b] = pos

    _parallel_blocks(m, work)
    return out
