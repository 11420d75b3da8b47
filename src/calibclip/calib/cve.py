"""CVE — Contrastive Visual Enhancer (docs/methods/calibclip.md §CVE): suppress dominant isolated attention spikes of [CLS].

Pure tensor steps (each testable on hand-made tensors) and ``image_feature_set``, which runs the
image tower once and recomputes only the [CLS] row of the last block with re-weighted attention.

Choices where the spec is silent [ours]:
- μ and σ (target region, dominance score) are population statistics (divide by n), per image.
- Border patches: the local mean is over the neighbours that exist (5 at an edge, 3 at a corner).
- σ_{D,B} = 0 (or |B| = 0) → every score is 0: no spike stands out, nothing is suppressed.
- The [CLS] token's attention to itself keeps weight 1 (it is not a patch).
- A row whose weights are all 1 returns the plain feature itself, so "cve" equals "plain" bit for bit
  (the recomputation would equal it only up to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from calibclip.tensors import l2n
from calibclip.calib.config import CalibConfig


def cls_patch_attention(attn: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) attention probabilities → (B, N) head-averaged [CLS]→patch attention a_i (T = 1 + N)."""
    return attn[:, :, 0, 1:].float().mean(dim=1)


def target_region(a: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, N) bool: T = { i : a_i > μ_a + sigma·σ_a } (population statistics per row)."""
    mu = a.mean(dim=-1, keepdim=True)
    sd = a.std(dim=-1, correction=0, keepdim=True)
    return a > mu + sigma * sd


def neighbour_mean(a: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N) → (B, N) mean of a over the 8 grid neighbours of each patch (existing ones at borders)."""
    h, w = grid
    x = a.float().reshape(-1, 1, h, w)
    ring = torch.ones(1, 1, 3, 3, dtype=x.dtype, device=x.device)
    ring[0, 0, 1, 1] = 0  # the centre is not its own neighbour
    total = F.conv2d(x, ring, padding=1)
    count = F.conv2d(torch.ones_like(x[:1]), ring, padding=1)
    return (total / count.clamp(min=1)).reshape(a.shape)


def local_deviation(a: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """D_i = a_i − mean of a over the 8 grid neighbours of i; (B, N)."""
    return a.float() - neighbour_mean(a, grid)


def dominance_score(d: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """S_i = (D_i − μ_{D,B}) / σ_{D,B}, statistics over the low-information region B = ~target; (B, N)."""
    low = (~target).float()
    n = low.sum(dim=-1, keepdim=True)
    mu = (d * low).sum(dim=-1, keepdim=True) / n.clamp(min=1)
    var = (((d - mu) * low) ** 2).sum(dim=-1, keepdim=True) / n.clamp(min=1)
    sd = var.sqrt()
    ok = sd > 0
    return torch.where(ok, (d - mu) / torch.where(ok, sd, torch.ones_like(sd)), torch.zeros_like(d))


def treatment_weights(score: torch.Tensor, target: torch.Tensor, tau_d: float, tau_s: float,
                      gamma: float) -> torch.Tensor:
    """Retain / Decay / Suppress: w = 1 in T or S <= τ_d; γ in B with τ_d < S <= τ_s; 0 in B with S > τ_s."""
    w = torch.ones_like(score, dtype=torch.float32)
    low = ~target
    w = torch.where(low & (score > tau_d), torch.full_like(w, gamma), w)
    return torch.where(low & (score > tau_s), torch.zeros_like(w), w)


def cve_weights(attn: torch.Tensor, grid: tuple[int, int], cfg: CalibConfig) -> dict[str, torch.Tensor]:
    """Spec §1 steps 1–3 from last-block attention (B, H, T, T): a, target, D, S and w, each (B, N)."""
    a = cls_patch_attention(attn)
    if a.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"CVE: {a.shape[1]} patch tokens do not fill the {grid[0]}x{grid[1]} grid.")
    target = target_region(a, cfg.target_sigma)
    d = local_deviation(a, grid)
    s = dominance_score(d, target)
    w = treatment_weights(s, target, cfg.tau_d, cfg.tau_s, cfg.gamma)
    return {"a": a, "target": target, "deviation": d, "score": s, "w": w}


def reweight_cls_attention(cls_attn: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ã_i^h = A^h_{0i}·w_i / Σ_j A^h_{0j}·w_j for the [CLS] row (B, H, T); w (B, N) covers patches, w_0 = 1."""
    full = torch.cat([torch.ones_like(w[:, :1]), w], dim=1).to(cls_attn.dtype)
    scaled = cls_attn * full[:, None, :]
    return scaled / scaled.sum(dim=-1, keepdim=True)


def recompute_cls(layer: Any, last_in: torch.Tensor, cls_attn: torch.Tensor) -> torch.Tensor:
    """Output (B, W) of the last block for the [CLS] token, given its attention row (B, H, T).

    Values, output projection, residual and MLP of the HF ``CLIPEncoderLayer`` — for the [CLS] row only.
    """
    attn = layer.self_attn
    b, t, _ = last_in.shape
    v = attn.v_proj(layer.layer_norm1(last_in)).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
    mixed = (cls_attn.to(v.dtype)[:, :, None, :] @ v).reshape(b, attn.num_heads * attn.head_dim)
    h = last_in[:, 0] + attn.out_proj(mixed)
    return h + layer.mlp(layer.layer_norm2(h))


@dataclass
class CVEResult:
    """Everything CVE computed for a batch (used by ``explain``); features are normalised (B, D)."""

    plain: torch.Tensor
    cve: torch.Tensor
    a: torch.Tensor  # (B, N) attention before CVE
    a_after: torch.Tensor  # (B, N) head-averaged re-weighted attention
    target: torch.Tensor
    score: torch.Tensor
    w: torch.Tensor


def cve_analysis(enc: Any, pixel_values: torch.Tensor, cfg: CalibConfig) -> CVEResult:
    """Run the image tower once, then CVE on its last block (one extra partial pass, batched)."""
    out = enc.image_tower(pixel_values)
    plain = l2n(out.embeds)
    attn = enc.last_block_attention("vision", out.last_in)
    parts = cve_weights(attn, tuple(enc.grid), cfg)
    w = parts["w"]
    changed = (w != 1).any(dim=-1)
    cls_attn = attn[:, :, 0, :]
    new_attn = reweight_cls_attention(cls_attn.float(), w)
    feats = plain
    if cfg.cve and bool(changed.any()):
        vm = enc.model.vision_model
        h = recompute_cls(vm.encoder.layers[-1], out.last_in, new_attn.to(out.last_in.dtype))
        recal = l2n(enc.model.visual_projection(vm.post_layernorm(h)))
        feats = torch.where(changed[:, None], recal, plain)
    return CVEResult(plain=plain, cve=feats, a=parts["a"], a_after=new_attn[:, :, 1:].mean(dim=1),
                     target=parts["target"], score=parts["score"], w=w)


def image_feature_set(enc: Any, pixel_values: torch.Tensor, cfg: CalibConfig) -> dict[str, torch.Tensor]:
    """{"plain": l2n(image_tower(pv).embeds), "cve": CVE features (== plain when cfg.cve is False)}."""
    if not cfg.cve:
        plain = l2n(enc.image_tower(pixel_values).embeds)
        return {"plain": plain, "cve": plain.clone()}
    res = cve_analysis(enc, pixel_values, cfg)
    return {"plain": res.plain, "cve": res.cve}
