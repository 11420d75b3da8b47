"""The fast ranking paths give exactly what the straightforward ones give, ties included (issues 20, 21)."""

from __future__ import annotations

import numpy as np
import pytest

from calibclip.calib import CalibConfig, discriminative_scores, ranking_scores, top_k_desc
from calibclip.calib.rerank import calibrated_positions, sort_desc_by_id, top_k_set


def _ref_sort_desc_by_id(cols, vals):  # the former two-sort implementation
    by_id = np.argsort(cols, axis=1, kind="stable")
    cols, vals = np.take_along_axis(cols, by_id, 1), np.take_along_axis(vals, by_id, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(cols, order, 1), np.take_along_axis(vals, order, 1)


def _features(rng, n, d=8, levels=None):
    """Unit rows; with ``levels`` the entries are quantised first, so many scores tie exactly."""
    x = rng.normal(size=(n, d)).astype(np.float32)
    if levels:
        x = np.round(x * levels) / levels
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)).astype(np.float32)


@pytest.mark.parametrize("levels", [None, 1])
def test_sort_and_top_k_match_reference_with_ties(levels):
    rng = np.random.default_rng(1)
    scores = _features(rng, 30, levels=levels) @ _features(rng, 200, levels=levels).T
    cols = np.stack([rng.permutation(200)[:40] for _ in range(30)])
    vals = np.take_along_axis(scores, cols, 1)
    for got, want in zip(sort_desc_by_id(cols, vals), _ref_sort_desc_by_id(cols, vals)):
        np.testing.assert_array_equal(got, want)
    full = np.argsort(-scores, axis=1, kind="stable")
    for k in (1, 7, 100, 199, 200):
        np.testing.assert_array_equal(top_k_desc(scores, k), full[:, :k])


@pytest.mark.parametrize("levels", [None, 1])
@pytest.mark.parametrize("cfg", [CalibConfig(rerank_k=10, lam=0.5), CalibConfig(rerank_k=10, lam=-0.7),
                                 CalibConfig(rerank_k=500), CalibConfig(rerank_k=10, disc_sim=False)])
def test_ranking_scores_order_is_discriminative_ranking(levels, cfg):
    rng = np.random.default_rng(2)
    q, qd = _features(rng, 9, levels=levels), _features(rng, 9, levels=levels)
    g, gc = _features(rng, 60, levels=levels), _features(rng, 60, levels=levels)
    _, want = discriminative_scores(q, qd, g, gc, cfg, 60)
    got = np.argsort(-ranking_scores(q, qd, g, gc, cfg), axis=1, kind="stable")  # the metrics' tie rule
    np.testing.assert_array_equal(got, want)


def test_ranking_scores_not_cosines_falls_back_to_full_order():
    rng = np.random.default_rng(3)
    q, qd = 50 * _features(rng, 4, levels=1), _features(rng, 4)
    g, gc = _features(rng, 12, levels=1), _features(rng, 12)
    cfg = CalibConfig(rerank_k=3)
    _, want = discriminative_scores(q, qd, g, gc, cfg, 12)
    got = np.argsort(-ranking_scores(q, qd, g, gc, cfg), axis=1, kind="stable")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("levels", [None, 1])
def test_top_k_set_is_the_top_k_desc_set_on_long_rows(levels):
    """Long rows take the sampled-threshold path; rows where fewer than k items pass the threshold
    (large values only at the sampled positions) and rows of equal values take the full-row path."""
    rng = np.random.default_rng(4)
    scores = _features(rng, 40, levels=levels) @ _features(rng, 700, levels=levels).T
    scores[3] = -1.0
    scores[3, ::8] = 5.0  # 88 sampled items far above the rest: a threshold that 88 < k=100 pass
    scores[4] = 0.25  # one value everywhere: the k lowest indices
    for k in (10, 40, 100):
        got = np.sort(top_k_set(scores, k), axis=1)
        np.testing.assert_array_equal(got, np.sort(top_k_desc(scores, k), axis=1))
    np.testing.assert_array_equal(np.sort(top_k_set(scores, 100)[4]), np.arange(100))


@pytest.mark.parametrize("levels", [None, 1])
def test_long_gallery_ranking_and_positions_equal_discriminative_ranking(levels):
    rng = np.random.default_rng(5)
    n = 500  # long enough for top_k_set's sampled threshold at K=20
    q, qd = _features(rng, 30, levels=levels), _features(rng, 30, levels=levels)
    g, gc = _features(rng, n, levels=levels), _features(rng, n, levels=levels)
    cfg = CalibConfig(rerank_k=20, lam=0.6)
    _, want = discriminative_scores(q, qd, g, gc, cfg, n)
    got = np.argsort(-ranking_scores(q, qd, g, gc, cfg), axis=1, kind="stable")
    np.testing.assert_array_equal(got, want)
    where = np.argsort(want, axis=1)  # position of each item in the wanted ranking
    items = np.stack([rng.choice(n, 5, replace=False) for _ in range(30)])
    items[0, :2] = want[0, [0, 19]]  # a first and a last candidate
    items[1, 0] = want[1, 20]  # the first item below the candidates
    np.testing.assert_array_equal(calibrated_positions(q, qd, g, gc, cfg, items),
                                  np.take_along_axis(where, items, 1))
