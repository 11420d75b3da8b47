"""Caption cleaning of the official RTD and LinCIR training loaders (both use the same ``clean_caption``).

Official reference: ``loader.py :: clean_caption`` (jaeseokbyun/RTD, navervision/lincir). In this order:

1. ``<PERSON>`` → ``person`` (case-sensitive, before lower-casing, so ``<person>`` stays as it is);
2. lower-cased, every ``$`` deleted (not replaced by a space: ``"$5"`` → ``"5"``), ends stripped;
3. the 77-token cut: when the caption tokenises to more than 77 ids (BOS and EOS included), it
   becomes the decoded text of its first 75 content tokens (``decode(ids[1:76])``), which is then
   tokenised again like any caption.
No ftfy, no HTML unescaping here (the tokenizer does its own normalisation later).
"""

from __future__ import annotations

from typing import Any

CONTEXT = 77  # the official loaders' limit, BOS and EOS included


def clean_caption(caption: str | None, tokenizer: Any, context_length: int = CONTEXT) -> str:
    """``caption`` as the official loaders' ``clean_caption`` returns it (rules 1–3 above).

    ``tokenizer``: an HF CLIP tokenizer (``encode`` with BOS/EOS, ``decode``), e.g. ``enc.tokenizer``.
    """
    caption = "" if caption is None else caption
    caption = caption.replace("<PERSON>", "person")
    caption = caption.lower().replace("$", "").strip()
    ids = tokenizer.encode(caption)  # with BOS/EOS, untruncated
    if len(ids) > context_length:
        caption = tokenizer.decode(ids[1:context_length - 1])
    return caption
