"""Text triplets (T_r, T_c, T_t): the JSON-lines format, a checked reader, a rule-based generator.

File format (method: docs/methods/rtd.md): one JSON object per line with string keys ``reference_caption``,
``conditioning_caption`` and ``target_caption``. Blank lines are ignored; every other line that
is not such an object is reported (a ``TripletWarning`` naming the file and line number) and skipped.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from calibclip.atomic import atomic_write_text
from calibclip.errors import UserError

KEYS = ("reference_caption", "conditioning_caption", "target_caption")


class TripletWarning(UserWarning):
    """A bad row of a triplet file, skipped."""


@dataclass(frozen=True)
class Triplet:
    """One training triplet: reference caption, modification text, target caption."""

    reference: str
    conditioning: str
    target: str

    def to_json(self) -> str:
        """One JSON line in the spec's key names."""
        return json.dumps({KEYS[0]: self.reference, KEYS[1]: self.conditioning, KEYS[2]: self.target},
                          ensure_ascii=False)


@dataclass
class TripletFile:
    """Result of reading a triplet file: the good triplets and the skipped rows (line number, reason)."""

    triplets: list[Triplet]
    bad: list[tuple[int, str]] = field(default_factory=list)


def _parse_line(line: str) -> Triplet:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    vals = []
    for k in KEYS:
        v = obj[k]
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"'{k}' must be a non-empty string")
        vals.append(v.strip())
    return Triplet(*vals)


def scan_triplets(path: str | Path) -> TripletFile:
    """Read a JSON-lines triplet file, collecting (line number, reason) of every bad row."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--triplets {path}: no such file; create one with `calibclip rtd make-triplets`.")
    out = TripletFile(triplets=[])
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                out.bad.append((lineno, "not UTF-8 text"))
                continue
            if not line:
                continue
            try:
                out.triplets.append(_parse_line(line))
            except ValueError as exc:
                out.bad.append((lineno, str(exc)))
    return out


def read_triplets(path: str | Path) -> list[Triplet]:
    """Good triplets of ``path``; one ``TripletWarning`` per bad row (file:line: reason), never silent.

    Raises UserError when the file is missing or has no good row.
    """
    res = scan_triplets(path)
    for lineno, reason in res.bad:
        warnings.warn(f"{path}:{lineno}: skipped bad triplet row: {reason}", TripletWarning, stacklevel=2)
    if not res.triplets:
        raise UserError(f"--triplets {path}: no valid triplet rows (need JSON lines with keys "
                        f"{', '.join(KEYS)}).")
    return res.triplets


def write_triplets(triplets: Iterable[Triplet], path: str | Path) -> int:
    """Write triplets as JSON lines atomically (tmp + rename); returns the count."""
    lines = [t.to_json() + "\n" for t in triplets]
    atomic_write_text(path, "".join(lines))
    return len(lines)


# ---- rule-based generator ----------------------------------------------------------------------

@dataclass(frozen=True)
class TripletGenConfig:
    """Lexicon and templates of the rule-based generator.

    A caption yields a triplet when it contains a word of one of the groups: that word is swapped
    for another word of the same group to make T_t, and T_c is a template filled with the old and
    new word. Adjective groups use ``adj_templates``, noun groups ``noun_templates``.
    """

    adjective_groups: tuple[tuple[str, ...], ...] = (
        ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray"),
        ("small", "large", "big", "tiny", "huge"),
        ("wooden", "metal", "glass", "plastic", "stone", "leather"),
        ("striped", "dotted", "plain", "checkered", "floral"),
        ("long", "short"),
        ("dark", "bright"),
        ("old", "new", "young"),
        ("empty", "full"),
    )
    noun_groups: tuple[tuple[str, ...], ...] = (
        ("dog", "cat", "horse", "cow", "sheep", "bird", "bear", "elephant", "zebra", "giraffe"),
        ("car", "bus", "truck", "bike", "bicycle", "motorcycle", "train", "boat", "airplane"),
        ("man", "woman", "boy", "girl", "child", "person"),
        ("shirt", "jacket", "dress", "coat", "sweater", "hat", "cap", "scarf", "skirt", "trousers"),
        ("table", "chair", "bed", "couch", "bench", "desk", "shelf"),
        ("square", "circle", "triangle", "star", "heart", "hexagon"),
        ("apple", "banana", "orange", "pizza", "cake", "sandwich"),
        ("tree", "flower", "house", "building", "tower", "bridge"),
        ("beach", "street", "park", "field", "forest", "kitchen", "room"),
        ("cup", "bottle", "vase", "bowl", "glass", "plate"),
    )
    adj_templates: tuple[str, ...] = ("make it {new}", "change {old} to {new}", "{new} instead of {old}",
                                      "it should be {new}", "make the {old} one {new}")
    noun_templates: tuple[str, ...] = ("replace {old} with {new}", "replace the {old} with a {new}",
                                       "change the {old} to a {new}", "show a {new} instead of the {old}",
                                       "swap the {old} for a {new}")


_WORD = re.compile(r"[A-Za-z]+")


def _match_case(new: str, old: str) -> str:
    return new.capitalize() if old[:1].isupper() else new


def _fix_article(text: str, start: int, new: str) -> str:
    """Make an 'a'/'an' directly before position ``start`` agree with ``new``."""
    m = re.search(r"\b(a|an|A|An)(\s+)$", text[:start])
    if not m:
        return text
    art = "an" if new[:1].lower() in "aeiou" else "a"
    art = art.capitalize() if m.group(1)[0].isupper() else art
    return text[:m.start(1)] + art + text[m.end(1):]


def _fix_templ_articles(text: str) -> str:
    """'a'/'an' before every word of a filled template agree with that word ("an orange")."""
    return re.sub(r"\b(a|an) ([A-Za-z])",
                  lambda m: ("an " if m.group(2).lower() in "aeiou" else "a ") + m.group(2), text)


def triplets_from_caption(caption: str, rng: random.Random, cfg: TripletGenConfig = TripletGenConfig(),
                          k: int = 1) -> list[Triplet]:
    """Up to ``k`` distinct triplets from one caption (empty when no word of the lexicon occurs)."""
    groups: dict[str, tuple[tuple[str, ...], bool]] = {}
    for g in cfg.adjective_groups:
        for w in g:
            groups.setdefault(w, (g, True))
    for g in cfg.noun_groups:
        for w in g:
            groups.setdefault(w, (g, False))
    cands = [m for m in _WORD.finditer(caption) if m.group(0).lower() in groups]
    out: list[Triplet] = []
    seen: set[str] = set()
    for _ in range(4 * k):  # a few extra tries: draws can repeat
        if not cands or len(out) >= k:
            break
        m = rng.choice(cands)
        old = m.group(0).lower()
        group, is_adj = groups[old]
        new = rng.choice([w for w in group if w != old])
        target = caption[:m.start()] + _match_case(new, m.group(0)) + caption[m.end():]
        target = _fix_article(target, m.start(), new)
        cond = rng.choice(cfg.adj_templates if is_adj else cfg.noun_templates).format(old=old, new=new)
        cond = _fix_templ_articles(cond)
        if target in seen:
            continue
        seen.add(target)
        out.append(Triplet(caption, cond, target))
    return out


def make_triplets(captions: Sequence[str], seed: int = 0, per_caption: int = 1,
                  cfg: TripletGenConfig = TripletGenConfig()) -> tuple[list[Triplet], int]:
    """Rule-based triplets from plain captions, deterministic for a seed.

    Returns (triplets, number of captions without a swappable keyword).
    """
    rng = random.Random(seed)
    triplets: list[Triplet] = []
    skipped = 0
    for cap in captions:
        cap = " ".join(cap.split())
        if not cap:
            continue
        got = triplets_from_caption(cap, rng, cfg, per_caption)
        skipped += not got
        triplets.extend(got)
    return triplets, skipped
