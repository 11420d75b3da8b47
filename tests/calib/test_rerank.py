"""Discriminative similarity and re-ranking (spec §3) on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

import calibclip.calib.rerank as rerank
from calibclip.calib import CalibConfig, discriminative_matrix, discriminative_scores, top_k_desc

# s0 = q_plain·g_plain = [0.9, 0.8, 0.7, 0.1]; disc = q_dcc·g_cve = [0, 0.4, 1.0, 1.0]
Q_PLAIN = np.array([[1.0, 0.0]], np.float32)
Q_DCC = np.array([[0.0, 1.0]], np.float32)
G_PLAIN = np.array([[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.1, 0.0]], np.float32)
G_CVE = np.array([[0.0, 0.0], [0.0, 0.4], [0.0, 1.0], [0.0, 1.0]], np.float32)


def test_rerank_inside_candidate_space_only():
    # K = 2: C = {0, 1}; s = 0.9 + 0.5·0 = 0.9 and 0.8 + 0.5·0.4 = 1.0 → 1 before 0;
    # items 2, 3 stay below in s0 order although their disc term is largest
    scores, ids = discriminative_scores(Q_PLAIN, Q_DCC, G_PLAIN, G_CVE, CalibConfig(rerank_k=2, lam=0.5), k=4)
    assert ids.tolist() == [[1, 0, 2, 3]]
    assert np.allclose(scores, [[1.0, 0.9, 0.7, 0.1]])
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_rerank_larger_candidate_space_and_truncation():
    # K = 3: s = [0.9, 1.0, 0.7 + 0.5 = 1.2] → 2, 1, 0; k = 2 keeps the first two
    scores, ids = discriminative_scores(Q_PLAIN, Q_DCC, G_PLAIN, G_CVE, CalibConfig(rerank_k=3), k=2)
    assert ids.tolist() == [[2, 1]]
    assert np.allclose(scores, [[1.2, 1.0]])
    # λ = 0.1: s = [0.9, 0.84, 0.8] → plain order
    _, ids = discriminative_scores(Q_PLAIN, Q_DCC, G_PLAIN, G_CVE, CalibConfig(rerank_k=3, lam=0.1), k=4)
    assert ids.tolist() == [[0, 1, 2, 3]]


def test_disc_sim_off_is_plain_top_k():
    scores, ids = discriminative_scores(Q_PLAIN, Q_DCC, G_PLAIN, G_CVE, CalibConfig(disc_sim=False, rerank_k=3), k=3)
    assert ids.tolist() == [[0, 1, 2]] and np.allclose(scores, [[0.9, 0.8, 0.7]])


def test_ties_break_by_gallery_index():
    g = np.array([[0.5, 0], [0.9, 0], [0.5, 0], [0.9, 0], [0.5, 0]], np.float32)
    _, ids = discriminative_scores(Q_PLAIN, Q_DCC, g, np.zeros_like(g), CalibConfig(rerank_k=3), k=5)
    assert ids.tolist() == [[1, 3, 0, 2, 4]]
    assert top_k_desc(np.array([[1.0, 2.0, 2.0, 2.0, 0.0]]), 2).tolist() == [[1, 2]]


def test_equals_formula_on_random_batch_with_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    q, qd = rng.normal(size=(7, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    g, gc = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    cfg = CalibConfig(rerank_k=10, lam=0.5)
    want_scores, want_ids = [], []
    for i in range(7):  # the formula, one query at a time, written out directly
        s0 = g @ q[i]
        cand = np.argsort(-s0, kind="stable")[:10]
        s = s0[cand] + 0.5 * (gc[cand] @ qd[i])
        order = cand[np.argsort(-s, kind="stable")]
        rest = np.argsort(-s0, kind="stable")[10:]
        want_ids.append(np.concatenate([order, rest])[:15])
        want_scores.append(np.concatenate([np.sort(s)[::-1], s0[rest]])[:15])
    scores, ids = discriminative_scores(q, qd, g, gc, cfg, k=15)
    assert ids.tolist() == np.array(want_ids).tolist()
    # float32 dot products of D=8 terms, summed in a BLAS-dependent order (chunking and the thread
    # count change it): each score may differ by at most D·eps32·Σ|q_i g_i| (+ λ times the same for
    # the discriminative term), so compare with that bound, not a relative tolerance near 0.
    eps = np.finfo(np.float32).eps
    tol = 8 * eps * float((np.abs(q) @ np.abs(g).T).max() + 0.5 * (np.abs(qd) @ np.abs(gc).T).max())
    assert np.allclose(scores, np.array(want_scores), rtol=0, atol=tol)
    monkeypatch.setattr(rerank, "_CHUNK_FLOATS", 100)  # forces one query per chunk
    s2, i2 = discriminative_scores(q, qd, g, gc, cfg, k=15)
    assert np.array_equal(i2, ids) and np.allclose(s2, scores, rtol=0, atol=tol)
    # the full-ranking matrix orders items exactly as the top-k lists
    full = discriminative_matrix(q, qd, g, gc, cfg)
    assert np.argsort(-full, axis=1, kind="stable")[:, :15].tolist() == ids.tolist()
    assert np.allclose(np.take_along_axis(full, ids[:, :10], 1), scores[:, :10], rtol=0, atol=tol)


def test_k_larger_than_gallery_and_empty_queries():
    scores, ids = discriminative_scores(Q_PLAIN, Q_DCC, G_PLAIN, G_CVE, CalibConfig(rerank_k=100), k=10)
    assert ids.shape == (1, 4)
    assert ids.tolist() == [[2, 1, 0, 3]]  # K ≥ n: all re-ranked, s = [0.9, 1.0, 1.2, 0.1 + 0.5 = 0.6]
    assert np.allclose(scores, [[1.2, 1.0, 0.9, 0.6]])
    s, i = discriminative_scores(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), G_PLAIN, G_CVE,
                                 CalibConfig(), k=3)
    assert s.shape == (0, 3) and i.shape == (0, 3)


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_matrix_disc_off_is_plain(lam):
    full = discriminative_matrix(Q_PLAIN, Q_DCC, G_PLAIN, G_CVE, CalibConfig(disc_sim=False, lam=lam))
    assert np.allclose(full, [[0.9, 0.8, 0.7, 0.1]])
