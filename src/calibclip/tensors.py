"""Small tensor helpers shared by every layer. Bottom of the import graph: imports nothing of ours."""

from __future__ import annotations

import torch


def l2n(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation (float32 on output)."""
    return torch.nn.functional.normalize(x.float(), dim=-1)
