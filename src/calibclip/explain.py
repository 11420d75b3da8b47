"""``calibclip explain IMAGE "query"``: a picture of what CalibCLIP does to one image and one query.

Panels: the model's view of the image; the last-layer [CLS] attention over the patch grid before CVE
(target region outlined, decayed tokens ◦, suppressed tokens ×); the re-weighted attention after CVE;
and the query's per-token [EOT] attention (the DCC weights e_j) with the masked general words in red.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from calibclip.atomic import atomic_write
from calibclip.calib import CalibConfig, cve_analysis, dcc_analysis


@dataclass
class Explanation:
    """What the picture shows, as arrays (grid maps (h, w); per-token lists for the query)."""

    image: np.ndarray  # (S, S, 3) float in [0, 1], the model's input
    attn_before: np.ndarray
    attn_after: np.ndarray
    target: np.ndarray  # bool
    weights: np.ndarray  # CVE w_i
    tokens: list[str]
    eot_attention: list[float]
    is_word: list[bool]
    masked: list[bool]
    s_plain: float  # cos(t, v)
    s_calib: float  # s0 + λ·cos(t̃, ṽ)


def _model_view(enc: Any, pixel_values: torch.Tensor) -> np.ndarray:
    """Undo the processor's normalisation so the panel shows what the model saw."""
    mean = np.asarray(getattr(enc.processor, "image_mean", [0.5] * 3), np.float32)
    std = np.asarray(getattr(enc.processor, "image_std", [0.5] * 3), np.float32)
    img = pixel_values[0].float().cpu().numpy().transpose(1, 2, 0) * std + mean
    return np.clip(img, 0, 1)


@torch.inference_mode()
def explain(enc: Any, image: Image.Image, query: str, cfg: CalibConfig | None = None) -> Explanation:
    """Run CVE on ``image`` and DCC on ``query`` and collect what ``plot_explanation`` draws."""
    cfg = cfg or CalibConfig()
    pv = enc.preprocess([image]).to(enc.device)
    v = cve_analysis(enc, pv, cfg)
    t = dcc_analysis(enc, [query], cfg)
    h, w = enc.grid
    span = range(1, int(t.eot[0]))  # tokens between SOT and EOT
    ids = t.input_ids[0].tolist()
    tokens = [enc.tokenizer.convert_ids_to_tokens(ids[j]).replace("</w>", "") for j in span]
    s0 = float(t.plain[0] @ v.plain[0])
    s = s0 + cfg.lam * float(t.dcc[0] @ v.cve[0]) if cfg.disc_sim else s0
    grid = lambda x: x[0].float().cpu().numpy().reshape(h, w)  # noqa: E731
    return Explanation(image=_model_view(enc, pv), attn_before=grid(v.a), attn_after=grid(v.a_after),
                       target=grid(v.target).astype(bool), weights=grid(v.w), tokens=tokens,
                       eot_attention=[float(t.e[0, j]) for j in span], is_word=[bool(t.words[0, j]) for j in span],
                       masked=[bool(t.general[0, j]) for j in span], s_plain=s0, s_calib=s)


def plot_explanation(ex: Explanation, out: str | Path, query: str = "") -> Path:
    """Draw the four panels into a PNG at ``out`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4), gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    axes[0].imshow(ex.image)
    axes[0].set_title("model input")
    vmax = float(max(ex.attn_before.max(), ex.attn_after.max(), 1e-12))
    for ax, data, title in ((axes[1], ex.attn_before, "[CLS] attention before CVE"),
                            (axes[2], ex.attn_after, "after CVE")):
        im = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax)
        ys, xs = np.nonzero(ex.target)
        ax.scatter(xs, ys, s=60, facecolors="none", edgecolors="white", marker="s", label="target region")
        ys, xs = np.nonzero((ex.weights > 0) & (ex.weights < 1))
        ax.scatter(xs, ys, s=50, facecolors="none", edgecolors="orange", marker="o", label="decayed")
        ys, xs = np.nonzero(ex.weights == 0)
        ax.scatter(xs, ys, s=50, c="red", marker="x", label="suppressed")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[1].legend(loc="lower left", fontsize=7, framealpha=0.6)
    for ax in axes[:3]:
        ax.set_xticks([])
        ax.set_yticks([])
    colors = ["tab:red" if m else ("tab:blue" if wd else "lightgrey") for m, wd in zip(ex.masked, ex.is_word)]
    axes[3].bar(range(len(ex.tokens)), ex.eot_attention, color=colors)
    axes[3].set_xticks(range(len(ex.tokens)), ex.tokens, rotation=60, ha="right", fontsize=8)
    axes[3].set_ylabel("[EOT] attention e_j")
    axes[3].set_title("DCC: red = masked general words, grey = not a word")
    fig.suptitle(f"\"{query}\"   cos(t, v) = {ex.s_plain:.4f}   calibrated s = {ex.s_calib:.4f}", fontsize=10)
    fig.tight_layout()
    try:
        atomic_write(out, lambda fh: fig.savefig(fh, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return out
