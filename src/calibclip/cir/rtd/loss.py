"""RTD's target-anchored loss: symmetric NT-Xent over the stacked [k̂; q̂] (method: docs/methods/rtd.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rtd_loss(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric NT-Xent of N query/key pairs.

    Z = [k̂_1..k̂_N; q̂_1..q̂_N] (2N L2-normalised rows); the positive of row a is a ± N and the
    denominator runs over every b ≠ a — so the other keys (and the other queries) are negatives
    too, the "self-contrastive" terms. Returns the mean over the 2N rows, computed in float32
    (also under autocast) because the logits are divided by a small τ.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ValueError(f"q and k must both be (N, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    n = q.shape[0]
    z = F.normalize(torch.cat([k, q]).float(), dim=-1)
    logits = (z @ z.T) / tau
    self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pair, float("-inf"))  # b ≠ a
    positive = torch.arange(2 * n, device=z.device).add(n).remainder(2 * n)
    return F.cross_entropy(logits, positive)
