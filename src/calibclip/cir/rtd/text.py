"""The text RTD trains on: captions cleaned exactly as the official RTD loader does (method: docs/methods/rtd.md).

Official reference: ``loader.py :: clean_caption`` and ``CaptionDataset_RTD`` of jaeseokbyun/RTD
(the same ``clean_caption`` as LinCIR's loader, ``calibclip.cir.textclean``). Rules, in this order:

1. reference T_r and target T_t only: ``<PERSON>`` → ``person`` (case-sensitive, before
   lower-casing, so ``<person>`` stays as it is);
2. lower-cased, every ``$`` deleted (not replaced by a space: ``"$5"`` → ``"5"``), ends stripped;
3. the 77-token cut: when the caption tokenises to more than 77 ids (BOS and EOS included), it
   becomes the decoded text of its first 75 content tokens (``decode(ids[1:76])``), which is then
   tokenised again like any caption;
4. the conditioning text T_c is **not** cleaned: it is appended to ``"a photo of $ that "``, and a
   ``$`` inside it tokenises to the placeholder and so **also receives the pseudo token** (every
   ``$`` does in RTD's encoder). That is what the official run trained on; ``cond_dollar="drop"``
   (``--cond-dollar drop``) deletes ``$`` from T_c too, which is what a user usually means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from calibclip.cir.rtd.triplets import Triplet
from calibclip.cir.textclean import clean_caption

__all__ = ["clean_caption", "clean_conditioning", "clean_triplets"]


def clean_conditioning(text: str, cond_dollar: str = "pseudo") -> str:
    """T_c: unchanged (official, rule 4), or with every ``$`` deleted for ``cond_dollar="drop"``."""
    return text.replace("$", "") if cond_dollar == "drop" else text


def clean_triplets(triplets: Sequence[Triplet], tokenizer: Any, cond_dollar: str = "pseudo") -> list[Triplet]:
    """Every triplet with T_r, T_t cleaned by ``clean_caption`` and T_c by ``clean_conditioning``."""
    cache: dict[str, str] = {}

    def cap(text: str) -> str:
        if text not in cache:
            cache[text] = clean_caption(text, tokenizer)
        return cache[text]

    return [Triplet(cap(t.reference), clean_conditioning(t.conditioning, cond_dollar), cap(t.target))
            for t in triplets]
