"""Build a small OpenAI-CLIP-style BPE tokenizer from a text corpus.

The OpenAI CLIP vocabulary is laid out as: the 256 byte-level characters, the same 256 with the
end-of-word suffix ``</w>``, one token per BPE merge, then ``<|startoftext|>`` and
``<|endoftext|>``. We reproduce that layout exactly, so ids of single characters match the real
vocabulary (``'$</w>'`` is 259, the placeholder token of composed retrieval) and
``transformers.CLIPTokenizer`` loads the files unchanged. Merges are learned with the
``tokenizers`` BPE trainer under the same normaliser/pre-tokeniser as ``CLIPTokenizer``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from pathlib import Path

import ftfy
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"


_WHITESPACE = re.compile(r"\s+")


def clip_normalize(text: str) -> str:
    """The text OpenAI's ``clip.tokenize`` actually encodes (``SimpleTokenizer.encode``'s cleaning).

    In OpenAI's order: ``ftfy.fix_text`` (mojibake, curly quotes, ligatures, NFC), ``html.unescape``
    twice (so ``&amp;amp;`` becomes ``&``), strip, runs of whitespace → one space, strip, lower-case.
    HF's ``CLIPTokenizer`` does only part of this (the fast one: NFC, whitespace, lower-case; no ftfy,
    no HTML unescaping), so we apply it ourselves before every HF tokenizer call; the HF steps are then
    no-ops on its output.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _bytes_to_unicode() -> list[str]:
    """The GPT-2/CLIP reversible byte → unicode table, in OpenAI's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_clip_tokenizer(corpus: Iterable[str], out_dir: str | Path, num_merges: int = 2000) -> CLIPTokenizer:
    """Learn ``num_merges`` BPE merges on ``corpus`` and write ``vocab.json``/``merges.txt`` to ``out_dir``.

    Returns the loaded ``CLIPTokenizer``. Deterministic for a given corpus.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probe = CLIPTokenizer(vocab={SOT: 0, EOT: 1}, merges=[])  # borrow CLIP's exact normaliser/pre-tokeniser
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOT))
    tok.normalizer = probe.backend_tokenizer.normalizer
    tok.pre_tokenizer = probe.backend_tokenizer.pre_tokenizer
    alphabet = _bytes_to_unicode()
    trainer = trainers.BpeTrainer(
        vocab_size=512 + num_merges + 2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        special_tokens=[],
        show_progress=False,
        min_frequency=2,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    learned = json.loads(tok.to_str())["model"]["merges"]
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges: list[str] = []
    for m in learned:
        a, b = m if isinstance(m, list) else m.split(" ")
        if a not in vocab or b not in vocab:
            continue  # only merges reachable from the byte alphabet
        merged = a + b
        if merged in vocab:
            continue
        vocab[merged] = len(vocab)
        merges.append(f"{a} {b}")
        if len(merges) >= num_merges:
            break
    vocab[SOT] = len(vocab)
    vocab[EOT] = len(vocab)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(vocab=str(out_dir / "vocab.json"), merges=str(out_dir / "merges.txt"))
