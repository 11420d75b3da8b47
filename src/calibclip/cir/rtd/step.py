"""One RTD micro-batch: build (q, k) from triplets (method: docs/methods/rtd.md), pure given the modules.

    r_i = ψ_T⁰(T_r^i)  (un-normalised)       s_i = φ(r_i + σ·u_i·ε_i)
    q_i     = ψ_T^θ("a photo of $ that {T_c^i}" ; s_i)     k_i     = ψ_T⁰(T_t^i)
    q_{B+i} = ψ_T^θ("a photo of $" ; s_i)                  k_{B+i} = ψ_T⁰(T_r^i)

Note k_{B+i} = r_i, so the anchor encodes each reference once. The anchor ψ_T⁰ and φ run without
a graph; gradients reach only ψ_T^θ (and, with ``anchor=False``, the keys it then encodes too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from calibclip.cir.rtd.config import RTDConfig
from calibclip.cir.rtd.triplets import Triplet

AnchorFn = Callable[[Sequence[str]], torch.Tensor]


def encode_with(enc: Any, texts: Sequence[str], text_model: Any = None,
                pseudo_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Projected, un-normalised text embeddings (B, D) through ``text_model`` (None = the encoder's own)."""
    ids, mask = enc.tokenize(list(texts))
    return enc.text_tower(ids.to(enc.device), mask.to(enc.device), pseudo_tokens=pseudo_tokens,
                          text_model=text_model).embeds


def anchor_encoder(enc: Any) -> AnchorFn:
    """ψ_T⁰ as a function of texts: frozen, no graph, float32 output."""
    def run(texts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            return encode_with(enc, texts).float()
    return run


def noise_for(cfg: RTDConfig, step: int, micro: int, batch: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(u (B, 1) ~ U(0,1), ε (B, D) ~ N(0, I)) for one micro-batch, a pure function of (seed, step, micro).

    Drawn on CPU from a generator seeded per micro-batch so that a resumed run draws exactly the
    same noise as an uninterrupted one, on any device.
    """
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1009 + micro)
    u = torch.rand(batch, 1, generator=g)
    eps = torch.randn(batch, dim, generator=g)
    return u, eps


def queries_and_keys(enc: Any, tower: torch.nn.Module, phi: torch.nn.Module | None, batch: Sequence[Triplet],
                     cfg: RTDConfig, u: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                     anchor: AnchorFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, k), each (N, D) un-normalised, N = 2B with the refined batch else B.

    ``batch`` holds triplets as the trainer cleaned them (``calibclip.cir.rtd.text``); texts are used
    as they are, so every ``$`` of a prompt (also one inside T_c) receives the pseudo token.

    ``anchor`` maps texts to ψ_T⁰ embeddings (default: run the encoder's own tower; the trainer
    passes a cache of precomputed features, identical values). ``u``/``eps`` are the noise of
    ``noise_for``; ignored with ``naive_concat`` (no φ).
    """
    anchor = anchor or anchor_encoder(enc)
    b = len(batch)
    refs = [t.reference for t in batch]
    conds = [t.conditioning for t in batch]  # cleaned beforehand (rtd.text): a '$' here takes the pseudo token
    tgts = [t.target for t in batch]
    r = k_t = None
    if cfg.anchor:
        a = anchor(refs + tgts)
        r, k_t = a[:b], a[b:]
    elif not cfg.naive_concat:
        r = anchor(refs)

    if cfg.naive_concat:
        texts = [cfg.naive_prompt.format(x, c) for x, c in zip(refs, conds)]
        if cfg.refined_batch:
            texts += [cfg.naive_ref_prompt.format(x) for x in refs]
        q = encode_with(enc, texts, text_model=tower)
    else:
        if phi is None:
            raise ValueError("φ is required unless naive_concat is set")
        if u is None or eps is None:
            raise ValueError("noise u, eps is required with φ (see noise_for)")
        with torch.no_grad():
            noisy = r + cfg.sigma * u.to(r.device) * eps.to(r.device)
            s = phi(noisy.to(next(phi.parameters(), noisy).dtype))
        texts = [cfg.prompt.format(c) for c in conds]
        pseudo = s
        if cfg.refined_batch:
            texts += [cfg.ref_prompt] * b
            pseudo = torch.cat([s, s])
        q = encode_with(enc, texts, text_model=tower, pseudo_tokens=pseudo)

    if cfg.anchor:
        k = torch.cat([k_t, r]) if cfg.refined_batch else k_t
    else:  # ablation: ψ_T^θ encodes the keys as well (with gradients)
        k = encode_with(enc, tgts + refs if cfg.refined_batch else tgts, text_model=tower)
    return q, k
