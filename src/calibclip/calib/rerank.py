"""Discriminative similarity and re-ranking (docs/methods/calibclip.md).

s0 = t·v (plain features); C_K = top-K by s0 (reliable candidate space); inside C_K
s = s0 + λ·(t̃·ṽ) with t̃ the DCC query and ṽ the CVE gallery feature; items outside C_K keep
their s0 order below the candidates. Features are L2-normalised, so dot products are cosines.
Ties are broken by ascending gallery index (the evaluation's tie rule).
"""

from __future__ import annotations

import numpy as np
import torch

from calibclip.blas import search_blas
from calibclip.calib.config import CalibConfig

_CHUNK_FLOATS = 1 << 24  # ~64 MB of float32 per query chunk
_GATHER_FLOATS = 1 << 19  # ~2 MB of gathered CVE rows at a time (stays in cache)


def sort_desc_by_id(cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row of (cols, vals) by vals descending, ties by ascending column index."""
    order = np.argsort(-vals, axis=1, kind="stable")
    cols_s, vals_s = np.take_along_axis(cols, order, 1), np.take_along_axis(vals, order, 1)
    tied = (vals_s[:, 1:] == vals_s[:, :-1]).any(axis=1)
    if tied.any():  # equal values keep their input order above; put those rows' ties in id order
        c, v = cols[tied], vals[tied]
        by_id = np.argsort(c, axis=1, kind="stable")
        c, v = np.take_along_axis(c, by_id, 1), np.take_along_axis(v, by_id, 1)
        again = np.argsort(-v, axis=1, kind="stable")
        cols_s[tied], vals_s[tied] = np.take_along_axis(c, again, 1), np.take_along_axis(v, again, 1)
    return cols_s, vals_s


def top_k_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """(m, n) → (m, k) column indices of the k largest per row, descending, ties by ascending index."""
    n = scores.shape[1]
    k = min(k, n)
    if k == 0:
        return np.zeros((len(scores), 0), np.int64)
    if k == n:
        return np.argsort(-scores, axis=1, kind="stable")
    # O(n) selection of the k largest (torch.topk: several times faster than numpy's argpartition
    # on float32 rows, and threaded over rows), then one sort of k values with the tie rule
    rows = np.require(scores, requirements=["C", "W"])  # torch.from_numpy needs a writable buffer (no copy if so)
    part = torch.topk(torch.from_numpy(rows), k, dim=1, sorted=False).indices.numpy()
    top, vals = sort_desc_by_id(part, np.take_along_axis(scores, part, 1))
    kth = vals[:, -1:]
    # argpartition picks arbitrarily among values tied at the boundary; redo those rare rows exactly
    tied = (scores == kth).sum(axis=1) > (vals == kth).sum(axis=1)
    if tied.any():
        top[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
    return top


def rerank_candidates(s0: np.ndarray, cand: np.ndarray, disc: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """s = s0[cand] + lam·disc for candidates (m, K) → (candidates sorted by s desc, sorted s)."""
    s = np.take_along_axis(s0, cand, 1) + np.float32(lam) * disc
    ids, s = sort_desc_by_id(cand, s)
    return ids, s.astype(np.float32)


def candidate_disc(q_dcc: np.ndarray, g_cve: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """(b, K) cos(t̃, ṽ) of each query's candidates: their CVE rows gathered a few queries at a time.

    Gathering every query's K rows at once makes a b·K·D block (67 MB for 327 queries at K=100,
    D=512) that is written once and read once; gathering a few queries' rows keeps it in cache.
    """
    out = np.empty(cand.shape, np.float32)
    step = max(1, _GATHER_FLOATS // max(1, cand.shape[1] * g_cve.shape[1]))
    for a in range(0, len(cand), step):
        out[a:a + step] = np.einsum("qd,qkd->qk", q_dcc[a:a + step], g_cve[cand[a:a + step]])
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
        with search_blas(b - a):  # no spinning BLAS pool left behind to slow the next text pass
            s0 = q_plain[a:b] @ g_plain.T
        if not cfg.disc_sim or k == 0:
            top = top_k_desc(s0, k)
            ids[a:b], scores[a:b] = top, np.take_along_axis(s0, top, 1)
            continue
        cand = top_k_desc(s0, max(k, big_k))
        head = cand[:, :big_k]
        disc = candidate_disc(q_dcc[a:b], g_cve, head)
        head_ids, head_s = rerank_candidates(s0, head, disc, cfg.lam)
        all_ids = np.concatenate([head_ids, cand[:, big_k:]], axis=1)[:, :k]
        all_s = np.concatenate([head_s, np.take_along_axis(s0, cand[:, big_k:], 1)], axis=1)[:, :k]
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


def ranking_scores(q_plain: np.ndarray, q_dcc: np.ndarray, g_plain: np.ndarray, g_cve: np.ndarray,
                   cfg: CalibConfig) -> np.ndarray:
    """(m, n) float32 scores ordering each row exactly as ``discriminative_scores(..., k=n)`` ranks it.

    Read with the metrics' tie rule (descending, ties by ascending index). The candidates C_K get
    the pseudo-scores n, n−1, …, n−K+1 in their re-ranked order; every other item keeps its s0, so
    its place below them is s0's order with ties by index — the order ``discriminative_scores``
    gives them — without sorting whole rows. A block whose s0 reaches n−K+1 (never for cosines:
    K < n makes that ≥ 2) is ranked by a full sort instead.
    """
    q_plain, q_dcc = np.asarray(q_plain, np.float32), np.asarray(q_dcc, np.float32)
    g_plain, g_cve = np.asarray(g_plain, np.float32), np.asarray(g_cve, np.float32)
    m, n = len(q_plain), len(g_plain)
    out = np.zeros((m, n), np.float32)
    big_k = min(cfg.rerank_k, n)
    step = _chunk(n, big_k * g_plain.shape[1] if n else 1)  # the blocks discriminative_scores uses
    with search_blas(1):  # one BLAS thread for the whole loop: see below
        _ranking_blocks(q_plain, q_dcc, g_plain, g_cve, cfg, out, big_k, step)
    return out


def _ranking_blocks(q_plain: np.ndarray, q_dcc: np.ndarray, g_plain: np.ndarray, g_cve: np.ndarray,
                    cfg: CalibConfig, out: np.ndarray, big_k: int, step: int) -> None:
    """``ranking_scores``' block loop, run under one BLAS thread.

    Each block's product is followed by torch.topk (torch's threads) and the CVE gather: a
    multi-threaded OpenBLAS product leaves its workers spinning on the cores those steps need
    (2 cores: top-K and gather 2-3x slower), and one BLAS thread gives each element the same
    value (OpenBLAS splits sgemm by output tiles, not by the summed dimension).
    """
    m, n = out.shape
    for a in range(0, m, step):
        b = min(m, a + step)
        s0 = out[a:b]  # scored in place: s0 for every item, then the candidates' pseudo-scores
        np.matmul(q_plain[a:b], g_plain.T, out=s0)
        if not cfg.disc_sim or n == 0:  # plain ranking: s0 itself
            continue
        cand = top_k_desc(s0, big_k)
        disc = candidate_disc(q_dcc[a:b], g_cve, cand)
        cand, _ = rerank_candidates(s0, cand, disc, cfg.lam)
        pseudo = np.arange(n, n - big_k, -1, dtype=np.float32)[None, :]
        if big_k < n and s0.max() >= n - big_k + 1:  # not cosines: rank everything explicitly
            in_head = np.zeros(s0.shape, bool)
            np.put_along_axis(in_head, cand, True, axis=1)
            rest = top_k_desc(s0, n)
            rest = rest[~np.take_along_axis(in_head, rest, 1)].reshape(b - a, n - big_k)
            cand = np.concatenate([cand, rest], axis=1)
            pseudo = np.arange(n, 0, -1, dtype=np.float32)[None, :]
        np.put_along_axis(s0, cand, np.broadcast_to(pseudo, cand.shape), axis=1)
