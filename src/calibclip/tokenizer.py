"""Build a small OpenAI-CLIP-style BPE tokenizer from a text corpus.

The OpenAI CLIP vocabulary is laid out as: the 256 byte-level characters, the same 256 with the
end-of-word suffix ``</w>``, one token per BPE merge, then ``<|startoftext|>`` and
``<|endoftext|>``. We reproduce that layout exactly, so ids of single characters match the real
vocabulary (``'$</w>'`` is 259, the placeholder token of composed retrieval) and
``transformers.CLIPTokenizer`` loads the files unchanged. Merges are learned by a small
deterministic BPE (:func:`learn_merges`) under the same normaliser/pre-tokeniser as ``CLIPTokenizer``.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import ftfy
from transformers import CLIPTokenizer

from calibclip.atomic import atomic_write_text

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


def learn_merges(corpus: Iterable[str], num_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """Learn BPE merges on ``corpus`` under CLIP's normaliser and pre-tokeniser (``</w>`` word ends).

    Plain BPE: repeatedly merge the most frequent adjacent pair. Ties are broken by the pair
    itself (lexicographically smallest first), so the result is the same in every process; the
    ``tokenizers`` trainer breaks ties in hash order, which changes from one process to the next.
    """
    probe = CLIPTokenizer(vocab={SOT: 0, EOT: 1}, merges=[]).backend_tokenizer  # CLIP's exact text rules
    words: Counter[tuple[str, ...]] = Counter()
    for line in corpus:
        for piece, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(clip_normalize(line))):
            words[tuple(piece[:-1]) + (piece[-1] + "</w>",)] += 1
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        merges.append(best)
        merged = best[0] + best[1]
        new_words: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    return merges


def build_clip_tokenizer(corpus: Iterable[str], out_dir: str | Path, num_merges: int = 2000) -> CLIPTokenizer:
    """Learn ``num_merges`` BPE merges on ``corpus`` and write ``vocab.json``/``merges.txt`` to ``out_dir``.

    Returns the loaded ``CLIPTokenizer``. Deterministic for a given corpus (same files in every process).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    alphabet = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges: list[str] = []
    for a, b in learn_merges(corpus, num_merges):
        merged = a + b
        if merged in vocab:
            continue
        vocab[merged] = len(vocab)
        merges.append(f"{a} {b}")
    vocab[SOT] = len(vocab)
    vocab[EOT] = len(vocab)
    atomic_write_text(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(out_dir / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(vocab=str(out_dir / "vocab.json"), merges=str(out_dir / "merges.txt"))
