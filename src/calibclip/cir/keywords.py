"""LinCIR's keyword masking of captions (method: docs/methods/zs-cir.md §3), two modes:

- ``mask_official`` (``--masking official``, default): the official loader bug for bug — the
  keyword runs (``keyword_runs``) replaced with ``str.replace`` (every occurrence, also inside other
  words), the random-word fallback at the first missing keyword;
- ``mask_words`` (``--masking words``): every maximal run of NOUN/PROPN/ADJ/DET words becomes the
  placeholder ``$``, whole tokens only; a caption without one gets one random word replaced; a
  caption without words becomes "a photo of $".

Part-of-speech tags come from spaCy's ``en_core_web_sm`` when both are installed (the tagger LinCIR
used). The model is not published on PyPI (only on spaCy's own release page, plus unofficial
re-uploads we do not depend on), so calibclip does not require it. Without it, ``RuleTagger`` is
the documented fallback: a small rule-based tagger that only has to tell keyword words (NOUN, PROPN,
ADJ, DET, all treated alike) from the rest, which in captions are mostly closed-class words:

- closed-class word lists (spaCy's universal tags): DET (articles, demonstratives, quantifiers),
  PRON (incl. possessives, which spaCy tags PRON), ADP, CCONJ/SCONJ, AUX, PART, NUM (number words
  and digits), a list of common adverbs (ADV), punctuation (PUNCT);
- open class: VERB for a list of verbs frequent in captions and edit texts, and for "-ing" words,
  unless a determiner directly precedes them ("a building", "the ride" → NOUN); "-ed" words are
  VERB when a preposition or determiner follows ("dressed in", "covered with") else ADJ ("striped");
  "-ly" words are ADV except a list of "-ly" adjectives/nouns ("curly", "family");
- everything else is NOUN (nouns and adjectives are both keywords, so they need not be told apart).
It is approximate where words are ambiguous, which only moves a run boundary by a word.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from calibclip.errors import UserError


@dataclass(frozen=True)
class MaskConfig:
    """Constants of LinCIR's keyword masking."""

    keyword_pos: frozenset[str] = frozenset({"NOUN", "PROPN", "ADJ", "DET"})
    placeholder: str = "$"
    empty_caption: str = "a photo of $"  # for a caption with no word at all
    spacy_model: str = "en_core_web_sm"


MASK = MaskConfig()

Tagged = list[tuple[str, str]]  # (token text, universal POS tag)


class Tagger(Protocol):
    """Tags captions: a list of (token, POS) per caption."""

    name: str

    def __call__(self, texts: Sequence[str]) -> list[Tagged]: ...


def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


CLOSED: dict[str, frozenset[str]] = {
    "DET": _words("a an the this that these those some any each every no all both either neither another "
                  "such what whatever which half"),
    "PRON": _words("i me my mine myself you your yours yourself he him his himself she her hers herself it its "
                   "itself we us our ours ourselves they them their theirs themselves one's someone somebody "
                   "something anyone anything everyone everything nobody nothing who whom whose"),
    "ADP": _words("of in on at by with without from to into onto over under above below near beside besides "
                  "behind between among amongst through across along alongside around against about after before "
                  "during inside outside toward towards upon within off up down like past beneath underneath via "
                  "per than as atop throughout"),
    "CCONJ": _words("and or but nor yet plus"),
    "SCONJ": _words("while because if although though whereas unless until since whether where when so"),
    "AUX": _words("is are was were be been being am has have had do does did can could will would should may "
                  "might must shall 's 're"),
    "PART": _words("not n't to 's"),
    "NUM": _words("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                  "sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred thousand million dozen"),
    "ADV": _words("very too also just only really quite more most less least here there now then together away "
                  "back almost well still even again nearly much rather instead else ever never always often "
                  "sometimes somewhat slightly outdoors indoors upside nearby apart next"),
}
# "that" is a determiner in "that dog" but in captions mostly a conjunction/pronoun ("a dog that is ..."):
# as DET it would glue runs together, so it is left out of DET.
CLOSED["DET"] = CLOSED["DET"] - {"that", "which", "what", "whatever"}
CLOSED["SCONJ"] = CLOSED["SCONJ"] | {"that", "which", "what", "whatever"}

VERBS = _words(
    "sit stand ride hold wear walk run look play eat lie lay fly jump make take go get contain carry throw catch "
    "swim drive use wait stare pose talk smile read cut hang lean remove change replace add put turn keep become "
    "appear seem move grow fill cross climb follow pull push open close sleep surround reach kick hit pass pick "
    "leave give bring prepare cook drink sell buy perform dance sing shine travel graze wash build fix enjoy try "
    "want need see let help meet depict show")  # verbs frequent in captions and edit texts, rarely nouns there
# a base-form verb follows these tags ("can fly", "they sit", "sit and eat", imperative at the start)
BEFORE_BASE_VERB = {None, "AUX", "PART", "PRON", "CCONJ", "SCONJ", "ADV", "VERB"}
ING_NOUNS = _words("building ceiling clothing painting evening morning ring king thing string wing swing spring "
                   "sling ping bing wedding pudding stuffing icing frosting railing siding bedding sibling "
                   "awning dining lighting housing parking opening drawing something nothing anything everything "
                   "earring earrings duckling darling lemming herring")
ED_NOUNS = _words("bed red shed sled bred fed led wed sped bled fled seed need feed weed reed speed steed hundred "
                  "tweed")
LY_NOT_ADV = _words("curly ugly friendly lovely lonely elderly silly chilly jolly woolly frilly hilly family fly "
                    "belly jelly lily bully rally ally holly only early daily weekly monthly yearly likely "
                    "oily bubbly sparkly wrinkly frizzly grizzly prickly cuddly comely homely lowly")

_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d+(?:[.,:]\d+)*|[^\sA-Za-z\d]")


def split_words(text: str) -> list[str]:
    """Words, numbers and single punctuation marks of ``text``, in order."""
    return _TOKEN.findall(text)


def _verb_base(low: str) -> str | None:
    """The listed verb ``low`` is a form of (itself, or its -s/-es/-ies third person), else None."""
    for cand in (low, low[:-1] if low.endswith("s") else "", low[:-2] if low.endswith("es") else "",
                 low[:-3] + "y" if low.endswith("ies") else ""):
        if cand in VERBS:
            return cand
    return None


def _closed_tag(low: str) -> str | None:
    for tag in ("DET", "PRON", "CCONJ", "SCONJ", "AUX", "NUM", "ADP", "PART", "ADV"):
        if low in CLOSED[tag]:
            return tag
    return None


def rule_tags(tokens: Sequence[str]) -> list[str]:
    """Universal POS tags for ``tokens`` by the rules of the module docstring."""
    tags: list[str] = []
    lows = [t.lower().replace("’", "'") for t in tokens]
    for i, low in enumerate(lows):
        prev = tags[i - 1] if i else None
        nxt = lows[i + 1] if i + 1 < len(lows) else ""
        if not re.match(r"[a-z\d]", low):
            tags.append("PUNCT")
        elif low[0].isdigit():
            tags.append("NUM")
        elif (tag := _closed_tag(low)) is not None:
            tags.append(tag)
        elif prev == "DET":  # "a building", "the ride", "a run": a determiner starts a noun phrase
            tags.append("NOUN")
        elif _verb_base(low) is not None and (
                prev in BEFORE_BASE_VERB or lows[i - 1] == "to"
                or (prev == "NOUN" and (low not in VERBS or lows[i - 1][-1] == "s"))):
            tags.append("VERB")  # "rides", "carries"; base forms only where a verb can stand ("two dogs sit")
        elif low.endswith("ing") and len(low) > 4 and low not in ING_NOUNS:
            tags.append("VERB")
        elif low.endswith("ed") and len(low) > 4 and low not in ED_NOUNS:
            tags.append("VERB" if _closed_tag(nxt) in ("ADP", "DET") else "ADJ")
        elif low.endswith("ly") and len(low) > 4 and low not in LY_NOT_ADV:
            tags.append("ADV")
        else:
            tags.append("NOUN")
    return tags


class RuleTagger:
    """Fallback POS tagger (see the module docstring): closed-class lists and suffix rules."""

    name = "rules"

    def __call__(self, texts: Sequence[str]) -> list[Tagged]:
        out = []
        for text in texts:
            toks = split_words(text)
            out.append(list(zip(toks, rule_tags(toks))))
        return out


class SpacyTagger:
    """spaCy's tagger (``en_core_web_sm``), parser and NER disabled."""

    name = "spacy"

    def __init__(self, model: str = MASK.spacy_model) -> None:
        import spacy  # noqa: F401 - ImportError tells the caller spaCy is missing

        self.nlp = spacy.load(model, disable=["parser", "ner", "lemmatizer"])

    def __call__(self, texts: Sequence[str]) -> list[Tagged]:
        # whitespace tokens (pos "SPACE") are kept: they end a keyword run, as in the official loader
        return [[(t.text, t.pos_) for t in doc] for doc in self.nlp.pipe(list(texts))]


def get_tagger(kind: str = "auto") -> Tagger:
    """"spacy" (error if unavailable), "rules", or "auto" (spaCy + en_core_web_sm if installed, else rules)."""
    if kind == "rules":
        return RuleTagger()
    if kind not in ("auto", "spacy"):
        raise UserError(f"--tagger {kind!r}: use auto, spacy or rules.")
    try:
        return SpacyTagger()
    except (ImportError, OSError) as exc:
        if kind == "spacy":
            raise UserError(f"--tagger spacy: {MASK.spacy_model} is not available ({type(exc).__name__}); "
                            f"install spaCy and its model (pip install spacy; python -m spacy download "
                            f"{MASK.spacy_model}) or use --tagger rules.") from None
        return RuleTagger()


def mask_tagged(tagged: Tagged, rng: random.Random, cfg: MaskConfig = MASK) -> str:
    """Caption with every maximal keyword run replaced by the placeholder (fallbacks as the spec says)."""
    pieces: list[str] = []
    masked = masked_run = False
    for tok, pos in tagged:
        if pos in cfg.keyword_pos and tok != cfg.placeholder:
            if not masked_run:
                pieces.append(cfg.placeholder)
            masked = masked_run = True
        else:
            pieces.append(tok)
            masked_run = False
    if masked:
        return " ".join(pieces)
    words = [i for i, (tok, _) in enumerate(tagged) if re.match(r"[A-Za-z\d]", tok)]
    if not words:
        return cfg.empty_caption
    pick = rng.choice(words)
    return " ".join(cfg.placeholder if i == pick else tok for i, (tok, _) in enumerate(tagged))


def mask_keywords(captions: Sequence[str], tagger: Tagger, rng: random.Random, cfg: MaskConfig = MASK) -> list[str]:
    """c′ for each caption (a literal ``$`` in a caption is dropped first: it would take s too)."""
    clean = [c.replace(cfg.placeholder, " ") for c in captions]
    return [mask_tagged(t, rng, cfg) for t in tagger(clean)]


# ---- the official loader's masking (``--masking official``) --------------------------------------
OFFICIAL_SLOT = "[$]"  # the official loader's added special token, turned into the `$` token at the end


def keyword_runs(tagged: Tagged, cfg: MaskConfig = MASK) -> list[str]:
    """The official ``extract_keywords_spacy``: maximal runs of NOUN/PROPN/ADJ/DET token texts, each run's
    tokens joined by one space, in caption order, duplicates kept."""
    runs, cur = [], []
    for tok, pos in tagged:
        if pos in cfg.keyword_pos:
            cur.append(tok)
        elif cur:
            runs.append(" ".join(cur))
            cur = []
    if cur:
        runs.append(" ".join(cur))
    return runs


def mask_official(caption: str, keywords: Sequence[str], rng: random.Random) -> str:
    """The official ``CaptionDataset.__getitem__`` replacement on a cleaned caption, bug for bug:

    each keyword found in the caption is replaced by ``str.replace`` — every occurrence, also inside
    other words ("a cat" in "a catalog" → "[$]alog"); at the first keyword that is empty or not found
    (and for an empty list) one random space-separated word of the caption (``random.sample``; it may
    be "" for a double space, which puts a slot between every character) is replaced the same way and
    the loop stops. Returns the text with each slot as a separate `` $ `` token (as the tokenizer splits
    the special token out); the caller applies the truncation fallback (``with_slot``).
    """
    replaced = caption
    for kw in list(keywords) or [""]:
        if kw != "" and kw in caption:  # membership in the ORIGINAL caption, as the official code
            replaced = replaced.replace(kw, OFFICIAL_SLOT)
        else:
            words = caption.split(" ")
            for w in rng.sample(words, k=min(int(len(words) * 1.0), 1)):
                replaced = replaced.replace(w, OFFICIAL_SLOT)
            break
    return replaced.replace(OFFICIAL_SLOT, f" {MASK.placeholder} ")


def mask_words(tagged: Tagged, rng: random.Random, cfg: MaskConfig = MASK) -> str:
    """``--masking words``: whole keyword runs only (``mask_tagged``), never a substring of a word."""
    return mask_tagged(tagged, rng, cfg)
