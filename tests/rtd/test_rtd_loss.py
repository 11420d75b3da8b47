"""rtd_loss equals an explicit-loop computation of the spec's formula (rtd.md §2)."""

from __future__ import annotations

import math

import pytest
import torch

from calibclip.cir.rtd import rtd_loss


def reference_loss(q: torch.Tensor, k: torch.Tensor, tau: float) -> float:
    """L = −(1/2N) Σ_a log(exp(z_a·z_pos(a)/τ) / Σ_{b≠a} exp(z_a·z_b/τ)), Z = [k̂; q̂], written as loops."""
    n = q.shape[0]
    rows = [k[i] / k[i].norm() for i in range(n)] + [q[i] / q[i].norm() for i in range(n)]
    rows = [[float(x) for x in r] for r in rows]

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    total = 0.0
    for a in range(2 * n):
        pos = a + n if a < n else a - n
        denom = sum(math.exp(dot(rows[a], rows[b]) / tau) for b in range(2 * n) if b != a)
        total += -math.log(math.exp(dot(rows[a], rows[pos]) / tau) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,tau", [(1, 3, 0.07), (3, 5, 0.07), (4, 8, 0.5)])
def test_loss_matches_explicit_loops(n, d, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    q = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    k = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert float(rtd_loss(q, k, tau)) == pytest.approx(reference_loss(q, k, tau), rel=1e-5)


def test_self_contrastive_terms_are_in_the_denominator():
    # Two pairs with perfectly aligned q_i = k_i. A one-directional InfoNCE over q·k only would see
    # orthogonal negatives; the spec's denominator also contains k_1·k_2 and q_1·q_2, so making the
    # keys similar to each other (k2 ≈ k1) must raise the loss even though q·k logits barely change.
    e1, e2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    apart = rtd_loss(torch.cat([e1, e2]), torch.cat([e1, e2]), tau=1.0)
    # by hand: every row has positive 1, negatives {0, 0} → −log(e / (e + 2)) per row
    assert float(apart) == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)
    # k1 = q1 = e1, k2 = q2 = e1 too: every off-diagonal similarity is 1 → −log(e / 3e) = log 3
    same = rtd_loss(torch.cat([e1, e1]), torch.cat([e1, e1]), tau=1.0)
    assert float(same) == pytest.approx(math.log(3.0), rel=1e-6)


def test_doubling_hard_negative_raises_loss():
    # The refined batch appends (q_{B+i}, k_{B+i}); if q_{B+i} is close to q_i, q_i's hardest negative
    # is its own un-modified query and the loss of the doubled batch exceeds that of the plain one.
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 6, generator=g)
    q = k + 0.1 * torch.randn(2, 6, generator=g)
    kr = torch.randn(2, 6, generator=g)
    qr = q + 0.05 * torch.randn(2, 6, generator=g)
    doubled = rtd_loss(torch.cat([q, qr]), torch.cat([k, kr]))
    assert float(doubled) == pytest.approx(reference_loss(torch.cat([q, qr]).double(),
                                                          torch.cat([k, kr]).double(), 0.07), rel=1e-4)
    assert float(doubled) > float(rtd_loss(q, k))


def test_gradient_and_scale_invariance():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 4, generator=g, requires_grad=True)
    k = torch.randn(3, 4, generator=g)
    loss = rtd_loss(q, k)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    # rows are normalised: scaling q or k by positive factors leaves the loss unchanged
    assert float(rtd_loss(q.detach() * 7, k * 0.1)) == pytest.approx(loss.item(), rel=1e-5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        rtd_loss(torch.zeros(2, 3), torch.zeros(3, 3))
