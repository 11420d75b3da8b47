"""Issue 15 (training side) and 16.15 for train-phi: the official LinCIR masking, best-by-validation φ,
exact resume under Ctrl-C inside the optimiser step, other models refused; SEARLE's first-`$` rule."""

from __future__ import annotations

import random

import pytest
import torch

import calibclip
import importlib
from calibclip.cir import build_phi, save_phi
from calibclip.cir.compose import composed_text_embeds, pseudo_slots
from calibclip.cir.keywords import RuleTagger, keyword_runs, mask_official, mask_words
from calibclip.cir.phi import load_phi
from calibclip.cir.train_phi import (PhiTrainConfig, best_path_for, state_path_for, train_phi, with_slot)
from calibclip.errors import UserError
from calibclip.testing import _CORPUS, tiny_clip

train_mod = importlib.import_module("calibclip.cir.train_phi")  # the package attribute is the function

FAST = dict(batch_size=4, lr=1e-3, seed=3)


def official_getitem_masking(caption, keywords, rng):
    """navervision/lincir loader.py CaptionDataset.__getitem__ replacement, re-implemented by hand."""
    if len(keywords) == 0:
        keywords = [""]
    replaced = caption
    for kw in keywords:
        if kw != '' and kw in caption:
            replaced = replaced.replace(kw, '[$]')
        else:
            words = caption.split(' ')
            if len(words) > 0:
                for w in rng.sample(words, k=min(int(len(words) * 1.0), 1)):
                    replaced = replaced.replace(w, '[$]')
            else:
                replaced = f'a photo of [$] that {caption}'
            break
    return replaced


def official_extract_keywords(tagged):
    sequences, cur = [], []
    for text, pos in tagged:
        if pos in ['NOUN', 'PROPN', 'ADJ', 'DET']:
            cur.append(text)
        else:
            if len(cur) > 0:
                sequences.append(" ".join(cur))
                cur = []
    if len(cur) > 0:
        sequences.append(" ".join(cur))
    return sequences


def as_slots(official: str) -> str:
    return official.replace("[$]", " $ ")  # the special token is split out by the tokenizer


def test_official_masking_equals_the_official_loader():
    cases = [("a red car parked near the old house.", ["a red car", "the old house"]),
             ("a cat and a catalog", ["a cat", "a catalog"]),
             ("a cat sat", []), ("a  b", []), ("a dog on a sofa", ["a dog", "a sofa", "a cat"]),
             ("", [])]
    for caption, kws in cases:
        for seed in range(5):
            got = mask_official(caption, kws, random.Random(seed))
            assert got == as_slots(official_getitem_masking(caption, kws, random.Random(seed))), (caption, seed)
    assert mask_official("a cat and a catalog", ["a cat", "a catalog"], random.Random(0)) == " $  and  $ alog"
    tagged = [("a", "DET"), ("red", "ADJ"), ("car", "NOUN"), ("parked", "VERB"), ("near", "ADP"),
              ("the", "DET"), ("old", "ADJ"), ("house", "NOUN"), (".", "PUNCT")]
    assert keyword_runs(tagged) == official_extract_keywords(tagged) == ["a red car", "the old house"]
    # words masking never cuts a word
    assert mask_words([("a", "DET"), ("cat", "NOUN"), ("and", "CCONJ"), ("a", "DET"), ("catalog", "NOUN")],
                      random.Random(0)) == "$ and $"


def test_truncated_slot_falls_back_to_the_official_prompt(tiny_encoder):
    long = " ".join(["red"] * 100) + " $"
    assert with_slot(tiny_encoder, [long, "a $ on a table"]) == ["a photo of $", "a $ on a table"]


SUBSTRING_HAZARDS = ["a man holding a manual", "a cat walking on a catwalk", "a red bus near the bushes",
                     "an old man next to an older woman", "a car parked in a carport", "the sun over the sunset beach",
                     "a boy with a boyish haircut", "two dogs and a hotdog stand", "a pin on a pink shirt",
                     "a bed in a bedroom", "a tree by the street", "a hat in a hatbox"]


def _differing(caps):
    tagged = RuleTagger()(caps)
    return sum(mask_official(c, keyword_runs(t), random.Random(0)).split() != mask_words(t, random.Random(0)).split()
               for c, t in zip(caps, tagged))


def test_official_and_words_masking_differ_where_keywords_are_substrings():
    """How much --masking official changes vs words (rule tagger); the numbers are quoted in the report."""
    assert _differing([c.lower() for c in _CORPUS]) == 0  # plain captions: identical masked text
    assert _differing(SUBSTRING_HAZARDS) == 8  # all but bus/bushes, old/older, dogs/hotdog, tree/street
    assert mask_official("a man holding a manual", ["a man", "a manual"], random.Random(0)).split() == \
        ["$", "holding", "$", "ual"]


def test_best_phi_by_validation_strictly_higher(tiny_encoder, tmp_path):
    scores = iter([0.2, 0.9, 0.9, 0.5])
    seen = []

    def validate(enc, phi):
        assert not phi.training
        seen.append({k: v.clone() for k, v in phi.state_dict().items()})
        return {"R@1": next(scores)}

    out = tmp_path / "phi.pt"
    res = train_phi(tiny_encoder, _CORPUS, out, PhiTrainConfig(steps=4, **FAST), progress=False, tagger="rules",
                    validate=validate, val_every=1)
    assert [v["step"] for v in res.val] == [1, 2, 3, 4]
    assert res.best == {"metric": "R@1", "value": 0.9, "step": 2}  # the tie at step 3 keeps step 2
    best = load_phi(best_path_for(out))
    assert all(torch.equal(best.state_dict()[k], seen[1][k]) for k in seen[1])
    last = load_phi(out)
    assert not all(torch.equal(last.state_dict()[k], seen[1][k]) for k in seen[1])


def test_ctrl_c_inside_the_optimiser_step_is_committed(tiny_encoder, tmp_path, sigint_after_update):
    enc = tiny_encoder
    cfg = PhiTrainConfig(steps=5, **FAST)
    full = train_phi(enc, _CORPUS, tmp_path / "a" / "phi.pt", cfg, progress=False, tagger="rules")
    with sigint_after_update(3), pytest.raises(KeyboardInterrupt):  # Ctrl-C at the end of the 3rd update
        train_phi(enc, _CORPUS, tmp_path / "b" / "phi.pt", cfg, progress=False, tagger="rules")
    st = torch.load(state_path_for(tmp_path / "b" / "phi.pt"), weights_only=True)
    assert st["step"] == 3 and len(st["losses"]) == 3  # the update and its record: both or neither
    resumed = train_phi(enc, _CORPUS, tmp_path / "b" / "phi.pt", cfg, resume=True, progress=False, tagger="rules")
    assert all(torch.allclose(v, full.phi.state_dict()[k], atol=1e-6) for k, v in resumed.phi.state_dict().items())
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)


def test_resume_refuses_another_model_or_a_damaged_state(tiny_encoder, tmp_path):
    out = tmp_path / "phi.pt"
    train_phi(tiny_encoder, _CORPUS, out, PhiTrainConfig(steps=2, **FAST), progress=False, tagger="rules")
    more = PhiTrainConfig(steps=3, **FAST)
    same_shapes = calibclip.load(str(tiny_clip(tmp_path / "s1", seed=1)), device="cpu")
    with pytest.raises(UserError, match="another model"):
        train_phi(same_shapes, _CORPUS, out, more, resume=True, progress=False, tagger="rules")
    wider = calibclip.load(str(tiny_clip(tmp_path / "w", seed=0, width=48, heads=4)), device="cpu")
    with pytest.raises(UserError, match="other sizes"):
        train_phi(wider, _CORPUS, out, more, resume=True, progress=False, tagger="rules")
    with pytest.raises(UserError, match="--masking official → words"):
        train_phi(tiny_encoder, _CORPUS, out, PhiTrainConfig(steps=3, masking="words", **FAST), resume=True,
                  progress=False, tagger="rules")
    state = state_path_for(out)
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cannot be read"):
        train_phi(tiny_encoder, _CORPUS, out, more, resume=True, progress=False, tagger="rules")
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        train_phi(tiny_encoder, _CORPUS, out, PhiTrainConfig(steps=1, amp="fp16", **FAST), progress=False,
                  tagger="rules")


def test_searle_fills_only_the_first_placeholder(tiny_encoder, tmp_path):
    enc = tiny_encoder
    torch.manual_seed(0)
    save_phi(build_phi("searle", enc.dim, enc.token_dim), tmp_path / "searle.pt")
    phi = load_phi(tmp_path / "searle.pt")
    assert phi.kind == "searle"  # our format records it
    official = {"Phi": phi.state_dict()}
    torch.save(official, tmp_path / "SEARLE_ViT-L14.pt")
    assert load_phi(tmp_path / "SEARLE_ViT-L14.pt").kind == "lincir"  # indistinguishable from LinCIR's
    assert load_phi(tmp_path / "SEARLE_ViT-L14.pt", kind="searle").kind == "searle"
    prompt = "a photo of $ that $ is {}"
    ids, _ = enc.tokenize([prompt.format("red"), "a $ , $ and $ {}".format("blue")])
    # SEARLE's encode_with_pseudo_tokens: column of the first '$' per row via unique/cumsum
    hits = (ids == enc.placeholder_id).nonzero()
    _, counts = torch.unique(hits[:, 0], return_counts=True)
    cum = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    first_cols = hits[cum][:, 1]
    want = torch.zeros_like(ids, dtype=torch.bool)
    want[torch.arange(2), first_cols] = True
    assert torch.equal(pseudo_slots(ids, enc.placeholder_id, "first"), want)
    s = torch.randn(1, enc.token_dim)
    with torch.no_grad():
        first = composed_text_embeds(enc, s, ["red"], prompt, rule="first")
        every = composed_text_embeds(enc, s, ["red"], prompt, rule="all")
        i2, m2 = enc.tokenize([prompt.format("red")])
        manual = enc.text_tower(i2, m2, pseudo_tokens=s, pseudo_slots=want[:1]).embeds
    torch.testing.assert_close(first, manual)
    assert (first - every).abs().max() > 1e-4


def test_train_phi_cli_val_masking_amp(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from calibclip.cli import app
    from calibclip.data.synth.writers import generate

    root = tmp_path / "cirr"
    generate(root, "cir", {"val": 12}, seed=0, progress=False)
    caps = tmp_path / "captions.txt"
    caps.write_text("\n".join(_CORPUS) + "\n", encoding="utf-8")
    out = tmp_path / "phi.pt"
    args = ["train-phi", "--model", str(tiny_model_dir), "--captions", str(caps), "--out", str(out),
            "--batch-size", "4", "--tagger", "rules", "--device", "cpu", "--quiet", "--steps", "2"]
    r = CliRunner().invoke(app, args + ["--val", f"cirr:{root}:val", "--val-every", "1", "--masking", "words"])
    assert r.exit_code == 0, r.output
    assert "words keyword masking" in r.output and "best R@1" in r.output
    assert out.exists() and best_path_for(out).exists()
    st = torch.load(state_path_for(out), weights_only=True)
    assert [v["step"] for v in st["val"]] == [1, 2] and st["config"]["masking"] == "words"
    for bad, msg in [(["--amp", "fp16"], "fp16 needs a CUDA"), (["--masking", "spacy"], "--masking 'spacy'"),
                     (["--val", "cirr"], "NAME:ROOT")]:
        r = CliRunner().invoke(app, args + bad)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output


def test_validation_steps_follow_the_official_schedule(tiny_encoder, tmp_path, monkeypatch):
    steps = []  # only the schedule matters here: a cheap stand-in loss keeps the 51 steps fast
    monkeypatch.setattr(train_mod, "lincir_loss", lambda enc, phi, *a: phi(torch.ones(1, enc.dim)).pow(2).mean())
    res = train_phi(tiny_encoder, _CORPUS, tmp_path / "phi.pt", PhiTrainConfig(steps=51, batch_size=2, seed=1),
                    progress=False, tagger="rules", validate=lambda e, p: steps.append(1) or {"R@1": 0.0},
                    val_every=20)
    assert [v["step"] for v in res.val] == [20, 40, 50, 51]  # every N, step 50 (official), the end
    assert res.best["step"] == 20  # all equal: the earliest wins
