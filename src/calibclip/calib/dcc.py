"""DCC — Discriminative Concept Calibrator (docs/methods/calibclip.md §DCC): re-encode the query with its general words masked.

e_j = head-averaged last-block attention from [EOT] to word token j; G = top-k word tokens by e_j;
t̃ = the query re-encoded with G masked (keys blocked in every layer by default).

Choices where the spec is silent [ours]:
- Word tokens are BPE tokens: a word split into pieces counts as its pieces (the attention is per token).
- Punctuation = a token with no letter or digit; special tokens (SOT, EOT, pad) and the composed-query
  placeholder ``$`` are never words.
- ``pad-token`` replaces a word by the tokenizer's pad token, or by id 0 (OpenAI CLIP's pad, "!") when
  the pad token is the EOT token — the EOT position is found from the ids, so it must stay unique.
- Ties in e_j go to the earlier token; at least ``dcc_min_keep`` word tokens stay unmasked.
- A query with nothing masked returns its plain feature itself (bit for bit).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from calibclip.tensors import l2n
from calibclip.calib.config import CalibConfig

_WORD_VOCAB: "weakref.WeakKeyDictionary[Any, torch.Tensor]" = weakref.WeakKeyDictionary()


def is_word_piece(token: str) -> bool:
    """True for a BPE token with at least one letter or digit (the end-of-word marker ignored)."""
    return any(ch.isalnum() for ch in token.replace("</w>", ""))


def word_vocab(tokenizer: Any, placeholder_id: int) -> torch.Tensor:
    """(V,) bool over the tokenizer's ids: True where the id is a word piece (cached per tokenizer)."""
    cached = _WORD_VOCAB.get(tokenizer)
    if cached is None:
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        cached = torch.tensor([t is not None and is_word_piece(t) for t in tokens], dtype=torch.bool)
        cached[[i for i in tokenizer.all_special_ids if 0 <= i < len(cached)]] = False
        _WORD_VOCAB[tokenizer] = cached
    out = cached.clone()
    if 0 <= placeholder_id < len(out):
        out[placeholder_id] = False  # the composed-query pseudo token is never a general concept
    return out


def word_token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab: torch.Tensor,
                    eot: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: word tokens strictly between SOT (position 0) and the EOT, not padding."""
    pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    inside = (pos > 0) & (pos < eot.to(input_ids.device)[:, None])
    return vocab.to(input_ids.device)[input_ids] & attention_mask.bool() & inside


def eot_attention(attn: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) attention → (B, T) head-averaged attention e_j from the [EOT] row to every token."""
    rows = attn[torch.arange(attn.shape[0], device=attn.device), :, eot.to(attn.device), :]  # (B, H, T)
    return rows.float().mean(dim=1)


def select_general(e: torch.Tensor, words: torch.Tensor, k: int, min_keep: int = 0) -> torch.Tensor:
    """(B, T) bool: the top-k word tokens by e (G); never more than (#words − min_keep) per row."""
    scores = e.float().masked_fill(~words, float("-inf"))
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                            .expand_as(order).contiguous())
    quota = (words.sum(dim=-1) - min_keep).clamp(min=0).clamp(max=k)
    return words & (rank < quota[:, None])


def delete_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, drop: torch.Tensor,
                  pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the ``drop`` tokens of each row, shifting the rest left and padding at the end."""
    order = torch.sort(drop.int(), dim=-1, stable=True).indices  # kept tokens first, in order
    ids = input_ids.gather(1, order)
    mask = attention_mask.gather(1, order)
    gone = drop.gather(1, order)
    return ids.masked_fill(gone, pad_id), mask.masked_fill(gone, 0)


def neutral_pad_id(tokenizer: Any, eot_id: int) -> int:
    """Token used by ``pad-token`` masking: the pad token unless it is (or could pass for) the EOT."""
    pad = tokenizer.pad_token_id
    if pad is None or pad == eot_id or pad >= len(tokenizer) - 1:
        return 0
    return int(pad)


@dataclass
class DCCResult:
    """DCC intermediates for a batch (used by ``explain``); features normalised (B, D)."""

    plain: torch.Tensor
    dcc: torch.Tensor
    input_ids: torch.Tensor
    words: torch.Tensor  # (B, T) bool
    e: torch.Tensor  # (B, T) EOT attention
    general: torch.Tensor  # (B, T) bool, the masked tokens G
    eot: torch.Tensor  # (B,) position of the pooling token


def dcc_analysis(enc: Any, texts: Sequence[str], cfg: CalibConfig,
                 pseudo_tokens: torch.Tensor | None = None) -> DCCResult:
    """Encode ``texts`` plainly, pick G from the last block's EOT attention, re-encode with G masked."""
    ids, mask = enc.tokenize(list(texts))
    ids, mask = ids.to(enc.device), mask.to(enc.device)
    out = enc.text_tower(ids, mask, pseudo_tokens=pseudo_tokens)
    plain = l2n(out.embeds)
    attn = enc.last_block_attention("text", out.last_in, mask)
    e = eot_attention(attn, out.eot)
    words = word_token_mask(ids, mask, word_vocab(enc.tokenizer, enc.placeholder_id), out.eot)
    general = select_general(e, words, cfg.dcc_k if cfg.dcc else 0, cfg.dcc_min_keep)
    changed = general.any(dim=-1)
    feats = plain
    if bool(changed.any()):
        if cfg.dcc_mask == "keys":
            again = enc.text_tower(ids, mask, pseudo_tokens=pseudo_tokens, key_mask=general)
        elif cfg.dcc_mask == "delete":
            pad = enc.tokenizer.pad_token_id if enc.tokenizer.pad_token_id is not None else enc.eot_id
            ids2, mask2 = delete_tokens(ids, mask, general, pad)
            again = enc.text_tower(ids2, mask2, pseudo_tokens=pseudo_tokens)
        else:  # "pad-token"
            ids2 = ids.masked_fill(general, neutral_pad_id(enc.tokenizer, enc.eot_id))
            again = enc.text_tower(ids2, mask, pseudo_tokens=pseudo_tokens)
        feats = torch.where(changed[:, None], l2n(again.embeds), plain)
    return DCCResult(plain=plain, dcc=feats, input_ids=ids, words=words, e=e, general=general,
                     eot=out.eot)


def text_feature_set(enc: Any, texts: Sequence[str], cfg: CalibConfig, pseudo_tokens: torch.Tensor | None = None,
                     batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{"plain": t, "dcc": t̃} normalised (B, D); "dcc" equals "plain" when cfg.dcc is False.

    ``pseudo_tokens`` (B, W_tok) are spliced at the placeholder of composed queries (never masked).
    """
    if isinstance(texts, str):
        texts = [texts]
    plains, dccs = [], []
    for i in range(0, len(texts), batch_size):
        pt = None if pseudo_tokens is None else pseudo_tokens[i:i + batch_size]
        if not cfg.dcc:
            ids, mask = enc.tokenize(list(texts[i:i + batch_size]))
            p = l2n(enc.text_tower(ids.to(enc.device), mask.to(enc.device), pseudo_tokens=pt).embeds)
            plains.append(p)
            dccs.append(p.clone())
            continue
        res = dcc_analysis(enc, texts[i:i + batch_size], cfg, pseudo_tokens=pt)
        plains.append(res.plain)
        dccs.append(res.dcc)
    if not plains:
        empty = torch.zeros(0, enc.dim, device=enc.device)
        return {"plain": empty, "dcc": empty.clone()}
    return {"plain": torch.cat(plains), "dcc": torch.cat(dccs)}
