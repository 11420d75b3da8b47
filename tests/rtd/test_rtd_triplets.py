"""Triplet file reader (bad rows reported with line numbers) and the rule-based generator."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from calibclip.cir.rtd import (Triplet, TripletGenConfig, TripletWarning, make_triplets, read_triplets,
                               scan_triplets, write_triplets)
from calibclip.cli import app
from calibclip.errors import UserError

GOOD = {"reference_caption": "a red car", "conditioning_caption": "make it blue", "target_caption": "a blue car"}


def _write_bad_file(path):
    lines = [
        json.dumps(GOOD),                                                   # 1 good
        "{not json",                                                        # 2 invalid JSON
        json.dumps({"reference_caption": "x", "target_caption": "y"}),      # 3 missing key
        "",                                                                 # 4 blank: ignored, not an error
        json.dumps({**GOOD, "target_caption": 5}),                          # 5 not a string
        json.dumps([1, 2, 3]),                                              # 6 not an object
        json.dumps({**GOOD, "reference_caption": "  a dog  "}),             # 7 good (stripped)
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n")  # 8 not UTF-8


def test_bad_rows_are_reported_with_line_numbers_and_skipped(tmp_path):
    path = tmp_path / "t.jsonl"
    _write_bad_file(path)
    with pytest.warns(TripletWarning) as rec:
        got = read_triplets(path)
    assert got == [Triplet("a red car", "make it blue", "a blue car"), Triplet("a dog", "make it blue", "a blue car")]
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 5
    for lineno, word in [(2, "JSON"), (3, "conditioning_caption"), (5, "target_caption"), (6, "object"),
                         (8, "UTF-8")]:
        assert any(f"t.jsonl:{lineno}:" in m and word in m for m in msgs), (lineno, msgs)
    assert [n for n, _ in scan_triplets(path).bad] == [2, 3, 5, 6, 8]


def test_no_good_rows_or_missing_file_is_a_user_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("{}\n")
    with pytest.warns(TripletWarning), pytest.raises(UserError, match="no valid triplet rows"):
        read_triplets(path)
    with pytest.raises(UserError, match="no such file"):
        read_triplets(tmp_path / "missing.jsonl")


def test_write_read_roundtrip(tmp_path):
    ts = [Triplet("a café", "make it \"cosy\"", "a cosy café"), Triplet("a", "b", "c")]
    assert write_triplets(ts, tmp_path / "x.jsonl") == 2
    assert read_triplets(tmp_path / "x.jsonl") == ts
    assert not list(tmp_path.glob("*.tmp"))


def test_generator_swaps_one_keyword_within_its_group_and_is_seeded():
    caps = ["a photo of a red car on the left of a blue house", "A dog sitting on a wooden table",
            "nothing to swap here", "an apple on a plate"]
    a, skipped = make_triplets(caps, seed=3, per_caption=2)
    b, _ = make_triplets(caps, seed=3, per_caption=2)
    c, _ = make_triplets(caps, seed=4, per_caption=2)
    assert a == b and a != c
    assert skipped == 1 and {t.reference for t in a} == {caps[0], caps[1], caps[3]}
    cfg = TripletGenConfig()
    groups = [set(g) for g in cfg.adjective_groups + cfg.noun_groups]
    for t in a:
        ref, tgt = t.reference.split(), t.target.split()
        assert len(ref) == len(tgt)
        diff = [(x, y) for x, y in zip(ref, tgt) if x != y]
        keyword = [(x.lower(), y.lower()) for x, y in diff if x.lower() not in ("a", "an")]
        assert len(keyword) == 1, t
        old, new = keyword[0]
        assert any(old in g and new in g for g in groups)
        assert old in t.conditioning and new in t.conditioning
    # articles follow the new word: "an apple" → "a cake", never "an cake"
    for t in a:
        if t.reference == caps[3]:
            first = t.target.split()[:2]
            assert first[0] == ("an" if first[1][0] in "aeiou" else "a")
    # capitalisation of a swapped first word is kept
    assert all(t.target[0].isupper() for t in a if t.reference == caps[1])


def test_make_triplets_cli(tmp_path):
    caps = tmp_path / "caps.txt"
    caps.write_text("a red car on a street\n\nnothing\na dog on a bed\n")
    out = tmp_path / "t.jsonl"
    r = CliRunner().invoke(app, ["rtd", "make-triplets", str(caps), "--out", str(out), "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "wrote 2 triplets" in r.output and "1 caption(s) without" in r.output
    assert len(read_triplets(out)) == 2
    r = CliRunner().invoke(app, ["rtd", "make-triplets", str(tmp_path / "none.txt"), "--out", str(out)])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output
