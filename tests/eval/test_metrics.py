"""Metrics against values worked out by hand, including ties and several positives per query."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibclip import ranks
from calibclip.eval import metrics as M


def test_positive_ranks_tie_rule_counting_and_sort_agree(monkeypatch):
    s = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.5]])
    pos = torch.tensor([[2, 0, 4, 3, -1]])
    expected = [[2, 1, 3, 4, M.MISSING]]  # 0.9 first, then the 0.5s in gallery order 0, 2, 4
    assert M.positive_ranks(s, pos).tolist() == expected
    monkeypatch.setattr(ranks, "SORT_ABOVE_POSITIVES", 0)  # force the stable-sort path
    assert M.positive_ranks(s, pos).tolist() == expected


def test_tir_by_hand_with_tie():
    # 4 captions × 2 images; captions 0,1 describe image 0, captions 2,3 image 1.
    sims = np.array([[0.9, 0.1],
                     [0.2, 0.95],   # caption 1 prefers the wrong image
                     [0.6, 0.6],    # tie: image 0 comes first by index → image 1 at rank 2
                     [0.1, 0.4]], np.float32)
    out = M.tir_metrics(sims, [0, 0, 1, 1], ks=(1, 2))
    assert out["t2i_R@1"] == pytest.approx(50.0)
    assert out["t2i_R@2"] == pytest.approx(100.0)
    # image 0 column [.9,.2,.6,.1] → caption 0 first (hit); image 1 column [.1,.95,.6,.4] → caption 1 first (miss)
    assert out["i2t_R@1"] == pytest.approx(50.0)
    assert out["i2t_R@2"] == pytest.approx(100.0)
    assert out["rsum"] == pytest.approx(300.0)


def test_tbpr_map_minp_by_hand():
    gallery_pids = [1, 2, 1, 3, 1]
    sims = np.array([[0.9, 0.8, 0.3, 0.7, 0.5],    # pid 1: positives at ranks 1, 4, 5
                     [0.9, 0.1, 0.2, 0.3, 0.4]],   # pid 2: its only image is last (rank 5)
                    np.float32)
    out = M.tbpr_metrics(sims, [1, 2], gallery_pids)
    # AP1 = (1/1 + 2/4 + 3/5)/3 = 0.7, INP1 = 3/5; AP2 = INP2 = 1/5
    assert out["mAP"] == pytest.approx(45.0)
    assert out["mINP"] == pytest.approx(40.0)
    assert (out["R@1"], out["R@5"], out["R@10"]) == pytest.approx((50.0, 100.0, 100.0))


def test_tbpr_all_ties_follow_gallery_order():
    out = M.tbpr_metrics(np.full((1, 5), 0.5, np.float32), [1], [1, 2, 1, 3, 1])
    # order 0,1,2,3,4 → positives at ranks 1, 3, 5
    assert out["mAP"] == pytest.approx(100 * (1 + 2 / 3 + 3 / 5) / 3)
    assert out["mINP"] == pytest.approx(60.0)


def _irra_rank(similarity, q_pids, g_pids, max_rank=10):
    """IRRA's utils/metrics.py `rank` (argsort path), used as the reference on tie-free data."""
    indices = torch.argsort(similarity, dim=1, descending=True)
    matches = g_pids[indices].eq(q_pids.view(-1, 1))
    all_cmc = matches[:, :max_rank].cumsum(1)
    all_cmc[all_cmc > 1] = 1
    all_cmc = all_cmc.float().mean(0) * 100
    num_rel = matches.sum(1)
    tmp_cmc = matches.cumsum(1)
    inp = [tmp_cmc[i][row.nonzero()[-1]] / (row.nonzero()[-1] + 1.0) for i, row in enumerate(matches)]
    minp = torch.cat(inp).mean() * 100
    tmp_cmc = torch.stack([tmp_cmc[:, i] / (i + 1.0) for i in range(tmp_cmc.shape[1])], 1) * matches
    ap = tmp_cmc.sum(1) / num_rel
    return all_cmc, ap.mean() * 100, minp


def test_tbpr_matches_irra_reference_and_chunking(monkeypatch):
    g = torch.Generator().manual_seed(0)
    g_pids = torch.randint(0, 12, (60,), generator=g)
    q_pids = g_pids[torch.randint(0, 60, (40,), generator=g)]
    sims = torch.rand(40, 60, generator=g)
    cmc, mAP, mINP = _irra_rank(sims, q_pids, g_pids)
    monkeypatch.setattr(M, "CHUNK_ELEMENTS", 100)  # many tiny chunks
    out = M.tbpr_metrics(sims.numpy(), q_pids.numpy(), g_pids.numpy())
    assert out["R@1"] == pytest.approx(float(cmc[0]), abs=1e-4)
    assert out["R@5"] == pytest.approx(float(cmc[4]), abs=1e-4)
    assert out["R@10"] == pytest.approx(float(cmc[9]), abs=1e-4)
    assert out["mAP"] == pytest.approx(float(mAP), abs=1e-4)
    assert out["mINP"] == pytest.approx(float(mINP), abs=1e-4)
    monkeypatch.setattr(ranks, "SORT_ABOVE_POSITIVES", 0)
    assert M.tbpr_metrics(sims, q_pids, g_pids)["mAP"] == pytest.approx(float(mAP), abs=1e-4)


def test_cirr_reference_excluded_and_subset():
    sims = np.array([[0.99, 0.5, 0.8, 0.6, 0.7],   # ref 0 would be first; target 3 is 3rd without it
                     [0.1, 0.5, 0.5, 0.2, 0.9]],   # ref 4 excluded; target 1 ties with 2, wins by index
                    np.float32)
    out = M.cirr_metrics(sims, reference=[0, 4], target=[3, 1], members=[[0, 1, 3, 4], [1, 2, 4]],
                         ks=(1, 2, 3), subset_ks=(1, 2))
    assert (out["R@1"], out["R@2"], out["R@3"]) == pytest.approx((50.0, 50.0, 100.0))
    # subsets without the reference: {1,3,4} → 4, 3, 1 (target 2nd); {1,2} → tie, 1 first
    assert (out["Rsubset@1"], out["Rsubset@2"]) == pytest.approx((50.0, 100.0))
    top = M.topk_indices(sims, 2, exclude=[0, 4])
    assert top.tolist() == [[2, 4], [1, 2]]
    assert M.subset_topk(sims, [[0, 1, 3, 4], [1, 2, 4]], [0, 4], k=2).tolist() == [[4, 3], [1, 2]]


def test_circo_map_by_hand():
    sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]] * 2, np.float32)
    out = M.circo_metrics(sims, [[1, 4], [0, 1, 2]], ks=(1, 2, 5))
    # q1: G at ranks 2 and 5 → AP@1 = 0, AP@2 = (1/2)/2, AP@5 = (1/2 + 2/5)/2; q2: ranks 1,2,3 → 1 everywhere
    assert out["mAP@1"] == pytest.approx(50.0)
    assert out["mAP@2"] == pytest.approx(62.5)
    assert out["mAP@5"] == pytest.approx(72.5)


def test_fashioniq_and_genecis():
    sims = np.array([[0.1, 0.9, 0.3], [0.8, 0.2, 0.2]], np.float32)
    out = M.fashioniq_metrics(sims, [2, 2], ks=(1, 2, 3))
    # q1 target rank 2; q2 target ties with item 1 at 0.2 → after it (index rule) → rank 3
    assert (out["R@1"], out["R@2"], out["R@3"]) == pytest.approx((0.0, 50.0, 100.0))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    g = M.genecis_metrics(np.array([[0.1, 0.9, 0.3], [0.1, 0.2, 0.99]], np.float32), [2, 1], mask, ks=(1, 2))
    assert (g["R@1"], g["R@2"]) == pytest.approx((50.0, 100.0))  # q2's 0.99 is outside its gallery


def test_query_without_positive_is_an_error():
    with pytest.raises(ValueError, match="label absent"):
        M.tbpr_metrics(np.zeros((1, 2), np.float32), [7], [1, 2])


def test_cirr_target_outside_img_set_is_a_subset_miss():
    sims = np.array([[0.1, 0.9, 0.8, 0.2]], np.float32)
    out = M.cirr_metrics(sims, reference=[0], target=[3], members=[[0, 1, 2]], ks=(1, 3), subset_ks=(1, 3))
    assert (out["R@1"], out["R@3"], out["Rsubset@1"], out["Rsubset@3"]) == (0.0, 100.0, 0.0, 0.0)
