"""Fast metric paths equal the former ones on random data with ties (issue 21 items 4 and 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import calibclip.calib as calib
from calibclip.calib import CalibConfig
from calibclip.eval import metrics as M
from calibclip.eval.scoring import CalibratedSims, FullSortSims


class _RowsOnly:
    """A source's score rows without its ``positions`` (ranks then come from ``ranking_scores``' rows)."""

    def __init__(self, src):
        self.shape, self.rows = src.shape, src.rows


def _old_i2t(sims, text_image, ks=(1, 5, 10)):  # the former path: transposed copy, every positive counted
    lists = [[] for _ in range(sims.shape[1])]
    for t, i in enumerate(text_image.tolist()):
        lists[i].append(t)
    ranks = M.ranks_for(np.ascontiguousarray(sims.T), M.pad_lists(lists))
    return {f"i2t_R@{k}": v for k, v in M.recall_from_ranks(ranks, ks).items()}


@pytest.mark.parametrize("levels", [None, 3])
def test_i2t_without_transposed_copy_equals_former(levels, monkeypatch):
    rng = np.random.default_rng(0)
    sims = rng.random((300, 60)).astype(np.float32)
    if levels:
        sims = np.round(sims * levels) / levels  # heavy ties, including between an image's captions
    monkeypatch.setattr(M, "CHUNK_ELEMENTS", 1500)  # several row blocks
    t_img = np.arange(300) % 60
    want = _old_i2t(sims, t_img)
    got = M.tir_metrics(sims, t_img)
    assert {k: got[k] for k in want} == want
    assert {k: v for k, v in M.tir_metrics(torch.from_numpy(sims), t_img).items()} == got
    assert M.i2t_metrics(np.ascontiguousarray(sims.T), t_img) == want
    # the best-ranked positive's rank is the minimum over all positives' ranks
    pos = M.pad_lists([[t for t in range(300) if t_img[t] == i] for i in range(60)])
    np.testing.assert_array_equal(M.best_ranks_for(np.ascontiguousarray(sims.T), pos),
                                  M.ranks_for(np.ascontiguousarray(sims.T), pos).min(1))
    np.testing.assert_array_equal(M.column_best_ranks(sims, pos), M.ranks_for(np.ascontiguousarray(sims.T), pos).min(1))


@pytest.mark.parametrize("levels", [None, 1])
def test_calibrated_sims_metrics_equal_former_path(levels):
    rng = np.random.default_rng(1)

    def unit(n):
        x = rng.normal(size=(n, 8)).astype(np.float32)
        if levels:
            x = np.round(x * levels) / levels
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)

    q, qd, g, gc = unit(80), unit(80), unit(40), unit(40)
    cfg = CalibConfig(rerank_k=8, lam=0.5)
    pids_g = np.arange(40) // 4
    pids_q = rng.integers(0, 10, 80)
    fast = CalibratedSims(q, qd, g, gc, cfg)
    got = (M.tbpr_metrics(fast, pids_q, pids_g), M.ranks_for(fast, pids_q[:, None] * 4))
    by_rows = _RowsOnly(fast)  # the score-rows path: ranking_scores
    rows = (M.tbpr_metrics(by_rows, pids_q, pids_g), M.ranks_for(by_rows, pids_q[:, None] * 4))
    former = FullSortSims(fast)  # the former path: discriminative_scores(k=n) pseudo-scores
    want = (M.tbpr_metrics(former, pids_q, pids_g), M.ranks_for(former, pids_q[:, None] * 4))
    assert got[0] == rows[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(rows[1], want[1])


@pytest.mark.parametrize("levels", [None, 1])
@pytest.mark.parametrize("disc_sim", [True, False])
def test_calibrated_positions_equal_score_rows_with_exclusion(levels, disc_sim, monkeypatch):
    """Positions read without score rows (``calibrated_positions``) equal the ranks from the score rows,
    with an excluded item per row (CIRR), the excluded item itself asked for, padding, and more
    positives than the counting path takes (stable-sort path), on 1 and 2 worker threads."""
    from calibclip import cores
    rng = np.random.default_rng(2)

    def unit(n):
        x = rng.normal(size=(n, 8)).astype(np.float32)
        if levels:
            x = np.round(x * levels) / levels  # heavy ties
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)

    q, qd, g, gc = unit(90), unit(90), unit(60), unit(60)
    cfg = CalibConfig(rerank_k=9, lam=0.7, disc_sim=disc_sim)
    fast = CalibratedSims(q, qd, g, gc, cfg)
    few = np.stack([rng.choice(60, 3, replace=False) for _ in range(90)])
    few[::7, 2] = -1  # padding
    many = np.stack([rng.choice(60, 40, replace=False) for _ in range(90)])
    ref = rng.integers(0, 60, 90)
    ref[::5] = -1  # rows that exclude nothing
    few[1::6, 0] = ref[1::6]  # the excluded item among the positives
    got = []
    for workers in (1, 2):
        monkeypatch.setattr(cores, "pool_workers", lambda w=workers: w)
        monkeypatch.setattr(calib.rerank, "pool_workers", lambda w=workers: w)
        got.append([M.ranks_for(fast, few, exclude=ref), M.ranks_for(fast, many), M.ranks_for(fast, few)])
    by_rows = _RowsOnly(fast)  # ranks from ranking_scores' score rows
    want = [M.ranks_for(by_rows, few, exclude=ref), M.ranks_for(by_rows, many), M.ranks_for(by_rows, few)]
    for g1 in got:
        for a, b in zip(g1, want):
            np.testing.assert_array_equal(a, b)
    assert (want[0][few == -1] == M.MISSING).all()
    hit = (few == ref[:, None]) & (ref[:, None] >= 0)
    assert hit.any() and (want[0][hit] == 59).all()  # the excluded item ranks last
