"""Composed queries through a φ projection (method: docs/methods/zs-cir.md), plain and CalibCLIP-calibrated.

    s = φ(ψ_I(I_r))                         (un-normalised image_embeds)
    q = normalize(ψ_T(prompt.format(T_c) ; s))   the `$` token(s) of the prompt take s

Which `$` tokens take s depends on the method, as in the official code (``fill_rule``): LinCIR, RTD
and Pic2Word (RTD's ``encode_with_pseudo_tokens_HF``, which they share) replace **every** `$` of the
row; SEARLE (``encode_with_pseudo_tokens``) replaces only the **first** `$` of each row, later ones
keep the ordinary `$` word embedding. A φ says which through its ``kind`` ("searle" only when the
file or ``load_phi(..., kind="searle")`` says so: the official SEARLE and LinCIR files are alike).

Choices where the specs are silent (written here as the spec asks):
- A literal ``$`` in the user's modification text is replaced by a space: it would otherwise tokenise
  to the placeholder and receive the pseudo token too (same rule as the RTD trainer).
- With CalibCLIP (``enc.calibration`` set), ``composed_feature_set`` returns two query sets for
  Index.rank's re-ranking: "plain" is the uncalibrated query above (the first-stage retrieval, as
  plain text queries are for text→image search) and "dcc" is the calibrated one: s from the CVE
  embedding of the reference image (calibclip.md §4: "CVE on the reference image before φ") and the
  composed text re-encoded with DCC (the pseudo token is never masked, calib.dcc excludes it). The
  DCC pass fills every `$` also for a SEARLE φ (the default prompt has a single `$`, so it only
  differs for a custom prompt with several).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from calibclip.tensors import l2n
from calibclip.cir.phi import phi_dims
from calibclip.errors import UserError

DEFAULT_PROMPT = "a photo of $ that {}"
FIQ_STRIP = ".?, "  # FashionIQ captions lose these characters at both ends


def check_prompt(prompt: str) -> str:
    """The prompt must hold the placeholder ``$`` and exactly one ``{}`` for the modification text."""
    if "$" not in prompt:
        raise UserError(f"--prompt {prompt!r}: needs a '$' where the image's pseudo word goes, "
                        "e.g. \"a photo of $ that {}\".")
    try:
        ok = prompt.count("{}") == 1 and prompt.format("\0").count("\0") == 1
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"--prompt {prompt!r}: needs exactly one '{{}}' where the modification text goes "
                        "(and no other braces), e.g. \"a photo of $ that {}\".")
    return prompt


def clean_text(text: str) -> str:
    """Modification text with any literal ``$`` removed (it would take the pseudo token)."""
    return " ".join(text.replace("$", " ").split())


def composed_texts(texts: Sequence[str], prompt: str = DEFAULT_PROMPT) -> list[str]:
    """The prompt filled with each (cleaned) modification text."""
    check_prompt(prompt)
    return [prompt.format(clean_text(t)) for t in texts]


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``module`` in eval mode (dropout off), restoring its previous mode afterwards."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def check_phi(enc: Any, phi: torch.nn.Module) -> None:
    """φ must map the encoder's D to its token width D_tok."""
    d_in, d_out = phi_dims(phi)
    if (d_in is not None and d_in != enc.dim) or (d_out is not None and d_out != enc.token_dim):
        raise UserError(f"φ maps {d_in} → {d_out} but model '{enc.name}' needs {enc.dim} → {enc.token_dim} "
                        "(image embedding → token width); use a φ trained for this model.")


def fill_rule(phi: torch.nn.Module) -> str:
    """"first" for a SEARLE φ (only the first `$` of a row takes s), else "all" (LinCIR, RTD, Pic2Word)."""
    return "first" if getattr(phi, "kind", None) == "searle" else "all"


def pseudo_slots(ids: torch.Tensor, placeholder_id: int, rule: str = "all") -> torch.Tensor:
    """(B, T) bool positions that take the pseudo token: every placeholder, or the first one per row."""
    slots = ids == placeholder_id
    if rule == "first":
        first = slots.int().cumsum(dim=1) == 1
        slots = slots & first
    return slots


def pseudo_tokens(enc: Any, phi: torch.nn.Module, image_embeds: torch.Tensor) -> torch.Tensor:
    """s = φ(image_embeds) (B, D_tok), φ in eval mode, on the encoder's device."""
    check_phi(enc, phi)
    p = next(phi.parameters(), None)
    x = image_embeds.to(p.device if p is not None else enc.device, p.dtype if p is not None else torch.float32)
    with eval_mode(phi):
        s = phi(x)
    if s.ndim != 2 or s.shape != (image_embeds.shape[0], enc.token_dim):
        raise UserError(f"φ returned shape {tuple(s.shape)}, expected ({image_embeds.shape[0]}, {enc.token_dim}).")
    return s.to(enc.device)


def composed_text_embeds(enc: Any, s: torch.Tensor, texts: Sequence[str], prompt: str = DEFAULT_PROMPT,
                         text_model: Any = None, rule: str = "all") -> torch.Tensor:
    """ψ_T(prompt.format(text) ; s): projected, un-normalised (B, D); gradients flow if enabled.

    ``rule``: which `$` take s ("all", or "first" for SEARLE; see ``fill_rule``)."""
    if len(texts) != s.shape[0]:
        raise ValueError(f"{len(texts)} texts but {s.shape[0]} pseudo tokens")
    ids, mask = enc.tokenize(composed_texts(texts, prompt))
    ids, mask = ids.to(enc.device), mask.to(enc.device)
    if not bool((ids == enc.placeholder_id).any(dim=1).all()):
        raise UserError(f"prompt {prompt!r}: the '$' was cut off by the {enc.context_length}-token context; "
                        "put '$' before the modification text or shorten the text.")
    slots = None if rule == "all" else pseudo_slots(ids, enc.placeholder_id, rule)
    return enc.text_tower(ids, mask, pseudo_tokens=s, text_model=text_model, pseudo_slots=slots).embeds


def _check_inputs(images: Sequence[Image.Image], texts: Sequence[str] | str) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if len(images) != len(texts):
        raise UserError(f"composed query: {len(images)} reference image(s) but {len(texts)} text(s); "
                        "give one modification text per image.")
    return texts


def reference_embeds(enc: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Un-normalised ψ_I(I_r) (B, D) — φ's input."""
    return enc.image_tower(pixel_values.to(enc.device)).embeds


def cve_reference_embeds(enc: Any, pixel_values: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain, CVE) un-normalised reference embeddings (B, D); CVE == plain when cfg.cve is off.

    calib.image_feature_set returns only normalised features, but φ takes the un-normalised
    embedding, so the last block's CLS row is recomputed here with calib's own pure functions
    (the same steps as calib.cve.cve_analysis, stopping before the normalisation).
    """
    from calibclip.calib import cve_weights, recompute_cls, reweight_cls_attention

    out = enc.image_tower(pixel_values.to(enc.device))
    if not cfg.cve:
        return out.embeds, out.embeds
    attn = enc.last_block_attention("vision", out.last_in)
    w = cve_weights(attn, tuple(enc.grid), cfg)["w"]
    changed = (w != 1).any(dim=-1)
    if not bool(changed.any()):
        return out.embeds, out.embeds
    new_attn = reweight_cls_attention(attn[:, :, 0, :].float(), w)
    vm = enc.model.vision_model
    h = recompute_cls(vm.encoder.layers[-1], out.last_in, new_attn.to(out.last_in.dtype))
    recal = enc.model.visual_projection(vm.post_layernorm(h))
    return out.embeds, torch.where(changed[:, None], recal, out.embeds)


def encode_composed(enc: Any, images: Sequence[Image.Image], texts: Sequence[str] | str, phi: torch.nn.Module,
                    prompt: str = DEFAULT_PROMPT, batch_size: int = 64) -> np.ndarray:
    """(n, D) float32 L2-normalised composed-query features (no calibration), batched."""
    texts = _check_inputs(images, texts)
    check_prompt(prompt)
    check_phi(enc, phi)
    chunks = []
    with torch.inference_mode():
        for a in range(0, len(texts), batch_size):
            s = pseudo_tokens(enc, phi, reference_embeds(enc, enc.preprocess(images[a:a + batch_size])))
            chunks.append(l2n(composed_text_embeds(enc, s, texts[a:a + batch_size], prompt, rule=fill_rule(phi))))
    # one host copy at the end: a per-batch .cpu() would stall the GPU queue every batch
    return torch.cat(chunks).float().cpu().numpy() if chunks else np.zeros((0, enc.dim), np.float32)


def composed_feature_set(enc: Any, images: Sequence[Image.Image], texts: Sequence[str] | str,
                         phi: torch.nn.Module, prompt: str = DEFAULT_PROMPT,
                         batch_size: int = 64) -> dict[str, np.ndarray]:
    """{"plain": q} without calibration; with ``enc.calibration`` also "dcc" (CVE reference + DCC text).

    Arrays are (n, D) float32 L2-normalised, ready for ``Index.rank`` (first stage on "plain",
    re-rank with "dcc" against the gallery's "cve" features).
    """
    cfg = enc.calibration
    if cfg is None:
        return {"plain": encode_composed(enc, images, texts, phi, prompt=prompt, batch_size=batch_size)}
    from calibclip.calib import text_feature_set

    texts = _check_inputs(images, texts)
    check_prompt(prompt)
    check_phi(enc, phi)
    plains, dccs = [], []
    with torch.inference_mode():
        for a in range(0, len(texts), batch_size):
            batch = texts[a:a + batch_size]
            e, e_cve = cve_reference_embeds(enc, enc.preprocess(images[a:a + batch_size]), cfg)
            s_cve = pseudo_tokens(enc, phi, e_cve)
            feats = text_feature_set(enc, composed_texts(batch, prompt), cfg, pseudo_tokens=s_cve)
            if e_cve is e and fill_rule(phi) == "all":  # CVE changed nothing: the calib pass encoded the plain query
                plain = feats["plain"]
            else:
                plain = l2n(composed_text_embeds(enc, pseudo_tokens(enc, phi, e), batch, prompt, rule=fill_rule(phi)))
            plains.append(plain)
            dccs.append(feats["dcc"])
    if not plains:
        empty = np.zeros((0, enc.dim), np.float32)
        return {"plain": empty, "dcc": empty.copy()}
    return {"plain": torch.cat(plains).float().cpu().numpy(), "dcc": torch.cat(dccs).float().cpu().numpy()}


# ---------------------------------------------------------------------------------------------- FashionIQ
def fashioniq_texts(c1: str, c2: str) -> tuple[str, str]:
    """("{c1} and {c2}", "{c2} and {c1}") with ``.?,`` and spaces stripped from each caption's ends."""
    a, b = c1.strip(FIQ_STRIP), c2.strip(FIQ_STRIP)
    return f"{a} and {b}", f"{b} and {a}"


def symmetric_query(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """normalize(normalize(f1) + normalize(f2)) row-wise."""
    def n(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return n(n(f1) + n(f2)).astype(np.float32)


def fashioniq_feature_set(enc: Any, images: Sequence[Image.Image], captions: Sequence[tuple[str, str]],
                          phi: torch.nn.Module, prompt: str = DEFAULT_PROMPT, batch_size: int = 64,
                          mode: str = "both") -> dict[str, np.ndarray]:
    """FashionIQ's query from its two captions, for each feature set.

    ``mode`` "both" (SEARLE/LinCIR/RTD): ``fashioniq_query``'s average of the two orders;
    "second-first" (Pic2Word): one query "{c2} and {c1}" with the captions as written.
    """
    if mode == "second-first":
        return composed_feature_set(enc, images, [f"{c[1]} and {c[0]}" for c in captions], phi, prompt, batch_size)
    if mode != "both":
        raise ValueError(f"unknown FashionIQ query mode {mode!r}")
    pairs = [fashioniq_texts(c[0], c[1]) for c in captions]
    f1 = composed_feature_set(enc, images, [p[0] for p in pairs], phi, prompt, batch_size)
    f2 = composed_feature_set(enc, images, [p[1] for p in pairs], phi, prompt, batch_size)
    return {k: symmetric_query(f1[k], f2[k]) for k in f1}


def fashioniq_query(enc: Any, images: Sequence[Image.Image], captions: Sequence[tuple[str, str]],
                    phi: torch.nn.Module, prompt: str = DEFAULT_PROMPT, batch_size: int = 64) -> np.ndarray:
    """(n, D) q = normalize(normalize(q("c1 and c2")) + normalize(q("c2 and c1"))), uncalibrated."""
    pairs = [fashioniq_texts(c[0], c[1]) for c in captions]
    f1 = encode_composed(enc, images, [p[0] for p in pairs], phi, prompt, batch_size)
    f2 = encode_composed(enc, images, [p[1] for p in pairs], phi, prompt, batch_size)
    return symmetric_query(f1, f2)
