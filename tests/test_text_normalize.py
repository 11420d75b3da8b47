"""Issue 15.6: the text a model sees equals OpenAI ``clip.tokenize``'s cleaning, on every input."""

from __future__ import annotations

import html
import re

import ftfy
import pytest

from calibclip.tokenizer import clip_normalize


def openai_rule(text: str) -> str:
    """openai/CLIP simple_tokenizer.py, by hand: whitespace_clean(basic_clean(text)).lower()."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = re.sub(r"\s+", " ", text).strip()
    return text.lower()


CASES = {
    "  Tom &amp;amp; Jerry\n\tRUN  ": "tom & jerry run",  # double-escaped entity, tabs/newlines
    "a &lt;b&gt; &quot;c&quot; &#36; 5": 'a <b> "c" $ 5',
    "\u201cHello\u201d it\u2019s": "\"hello\" it's",  # curly quotes
    "\ufb01ne \ufb02ower": "fine flower",  # ligatures
    "\uff21\uff22\uff23\uff11\uff12 \u3000x": "abc12 x",  # full-width letters, digits, ideographic space
    "caf\u00c3\u00a9 na\u00c3\u00afve": "caf\u00e9 na\u00efve",  # UTF-8 read as Latin-1 (mojibake)
    "e\u0301t\u00e9": "\u00e9t\u00e9",  # NFC
    "a photo of $ that {}": "a photo of $ that {}",
}


@pytest.mark.parametrize("raw,expected", list(CASES.items()))
def test_clip_normalize_equals_the_openai_rule(raw, expected):
    assert openai_rule(raw) == expected  # the hand-made expectation agrees with the official rule
    assert clip_normalize(raw) == expected


def test_encoder_tokenizes_the_normalised_text(tiny_encoder):
    raw = ["Tom &amp;amp; Jerry\u2019s \ufb01sh", "\uff32\uff25\uff24 car", "caf\u00c3\u00a9"]
    ids, mask = tiny_encoder.tokenize(raw)
    want = tiny_encoder.tokenizer([openai_rule(t) for t in raw], padding=True, return_tensors="pt")
    assert ids.tolist() == want["input_ids"].tolist() and mask.tolist() == want["attention_mask"].tolist()
    # Before this change the HF tokenizer saw the raw text: the ids differed on all three inputs.
    old = tiny_encoder.tokenizer(raw, padding=True, return_tensors="pt")["input_ids"]
    assert all(a != b for a, b in zip(old.tolist(), ids.tolist()))
    assert tiny_encoder.token_count(raw[0]) == len(tiny_encoder.tokenizer(openai_rule(raw[0]))["input_ids"])
