"""CVE steps (spec §1) on hand-made tensors, values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from calibclip.calib import (
    CalibConfig,
    cls_patch_attention,
    cve_weights,
    dominance_score,
    local_deviation,
    neighbour_mean,
    reweight_cls_attention,
    target_region,
    treatment_weights,
)


def test_cls_patch_attention_is_head_mean_of_cls_row_without_cls():
    attn = torch.zeros(1, 2, 3, 3)
    attn[0, 0, 0] = torch.tensor([0.2, 0.5, 0.3])
    attn[0, 1, 0] = torch.tensor([0.4, 0.1, 0.5])
    attn[0, :, 1:] = 9.0  # other rows must not matter
    assert torch.allclose(cls_patch_attention(attn), torch.tensor([[0.3, 0.4]]))


def test_target_region_uses_population_std():
    # μ = 1, population σ = sqrt((1+1+1+9)/4) = sqrt(3) → threshold 1 + 1.5·1.732 = 3.598 < 4.
    # (the sample σ = 2 would give threshold 4 and an empty target region)
    a = torch.tensor([[0.0, 0.0, 0.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    # second row: μ = 2.5, σ = sqrt(1.25) = 1.118 → threshold 4.177: nothing is a target
    assert target_region(a, 1.5).tolist() == [[False, False, False, True], [False] * 4]
    # σ multiplier 0.5 → threshold 2.5 + 0.559 = 3.059: only the 4
    assert target_region(a[1:], 0.5).tolist() == [[False, False, False, True]]


def test_neighbour_mean_and_deviation_on_3x3():
    a = torch.arange(1.0, 10.0)[None]  # [[1,2,3],[4,5,6],[7,8,9]]
    nm = neighbour_mean(a, (3, 3)).reshape(3, 3)
    assert nm[1, 1].item() == pytest.approx(40 / 8)  # all 8 neighbours: 45 − 5
    assert nm[0, 0].item() == pytest.approx((2 + 4 + 5) / 3)  # corner: 3 neighbours
    assert nm[0, 1].item() == pytest.approx((1 + 3 + 4 + 5 + 6) / 5)  # edge: 5 neighbours
    assert nm[2, 2].item() == pytest.approx((5 + 6 + 8) / 3)
    d = local_deviation(a, (3, 3)).reshape(3, 3)
    assert d[1, 1].item() == pytest.approx(0.0)
    assert d[0, 0].item() == pytest.approx(1 - 11 / 3)
    assert d[2, 2].item() == pytest.approx(9 - 19 / 3)


def test_local_deviation_on_a_non_square_grid_keeps_row_major_layout():
    # grid 2 rows × 3 columns, spike at row 0, column 2
    a = torch.tensor([[0.0, 0.0, 6.0, 0.0, 0.0, 0.0]])
    d = local_deviation(a, (2, 3))
    # (0,0): nbrs (0,1),(1,0),(1,1) = 0 → 0; (0,1): 5 nbrs incl. the 6 → −1.2; (0,2): nbrs all 0 → 6
    # (1,0): 3 nbrs, none the spike → 0; (1,1): 5 nbrs incl. spike → −1.2; (1,2): 3 nbrs incl. spike → −2
    assert torch.allclose(d, torch.tensor([[0.0, -1.2, 6.0, 0.0, -1.2, -2.0]]))


def test_dominance_score_uses_statistics_of_low_information_region_only():
    d = torch.tensor([[0.0, 1.0, 2.0, 3.0, 10.0]])
    target = torch.tensor([[False, False, False, False, True]])
    # over B = first four: μ = 1.5, σ = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 4) = sqrt(1.25)
    sd = math.sqrt(1.25)
    want = torch.tensor([[(0 - 1.5) / sd, (1 - 1.5) / sd, (2 - 1.5) / sd, (3 - 1.5) / sd, (10 - 1.5) / sd]])
    assert torch.allclose(dominance_score(d, target), want)


def test_dominance_score_is_zero_when_low_region_is_flat():
    d = torch.tensor([[2.0, 2.0, 2.0, 7.0]])
    target = torch.tensor([[False, False, False, True]])
    assert dominance_score(d, target).tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_treatment_weights_retain_decay_suppress():
    s = torch.tensor([[1.0, 2.0, 2.5, 3.0, 3.5, 5.0]])
    target = torch.tensor([[False, False, False, False, False, True]])
    # S <= 2 retain; 2 < S <= 3 decay (γ); S > 3 suppress; targets always retained
    w = treatment_weights(s, target, tau_d=2.0, tau_s=3.0, gamma=0.5)
    assert w.tolist() == [[1.0, 1.0, 0.5, 0.5, 0.0, 1.0]]
    w = treatment_weights(s, target, tau_d=2.0, tau_s=3.0, gamma=0.25)
    assert w.tolist() == [[1.0, 1.0, 0.25, 0.25, 0.0, 1.0]]


def test_reweight_cls_attention_renormalises_with_cls_weight_one():
    cls_attn = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])  # (B=1, H=1, T=4): [CLS], 3 patches
    w = torch.tensor([[1.0, 0.5, 0.0]])
    # scaled: 0.1, 0.2, 0.15, 0 → sum 0.45
    out = reweight_cls_attention(cls_attn, w)
    assert torch.allclose(out, torch.tensor([[[0.1 / 0.45, 0.2 / 0.45, 0.15 / 0.45, 0.0]]]))
    assert torch.equal(reweight_cls_attention(cls_attn, torch.ones(1, 3)), cls_attn)


def test_cve_weights_pipeline_protects_target_and_decays_isolated_spike():
    # 4×4 grid: object block of 10s top-left (target region), background 1, isolated spike 4 at (3,3)
    a = torch.ones(4, 4)
    a[:2, :2] = 10
    a[3, 3] = 4
    attn = torch.zeros(1, 1, 17, 17)
    attn[0, 0, 0, 1:] = a.flatten()
    parts = cve_weights(attn, (4, 4), CalibConfig())
    # μ = 55/16, σ = sqrt(427/16 − μ²) = 3.856 → threshold 9.22: exactly the four 10s are targets
    assert parts["target"].reshape(4, 4)[:2, :2].all() and parts["target"].sum() == 4
    # D over B (row-major, targets skipped), by hand:
    d_low = torch.tensor([-3.6, 0.0, -2.25, 0.0, -3.6, -2.25, -1.5, -0.6, 0.0, 0.0, -0.6, 3.0])
    s_spike = (3.0 - d_low.mean()) / d_low.std(correction=0)  # = 2.24: decay band (2, 3]
    assert parts["score"][0, 15].item() == pytest.approx(s_spike.item(), rel=1e-5)
    want = torch.ones(16)
    want[15] = 0.5
    # (1,1) has S = 3.7 > τ_s but lies in the target region: retained
    assert parts["score"][0, 5] > 3.0
    assert parts["w"][0].tolist() == want.tolist()


def test_cve_weights_rejects_mismatched_grid():
    with pytest.raises(ValueError, match="grid"):
        cve_weights(torch.zeros(1, 1, 10, 10), (4, 4), CalibConfig())
