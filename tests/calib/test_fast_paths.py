"""The fast ranking paths give exactly what the straightforward ones give, ties included (issues 20, 21)."""

from __future__ import annotations

import numpy as np
import pytest

from calibclip.calib import CalibConfig, discriminative_scores, ranking_scores, top_k_desc
from calibclip.calib.rerank import sort_desc_by_id


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
