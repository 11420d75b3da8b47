"""LinCIR's text-only φ training on the tiny model: keyword masking, the loss as the spec writes it,
learning, a frozen text tower, exact resume (also after Ctrl-C), and the train-phi CLI."""

from __future__ import annotations

import importlib
import random

import pytest
import torch
from typer.testing import CliRunner

from calibclip.cir import PhiTrainConfig, RuleTagger, build_phi, get_tagger, load_phi, mask_keywords, train_phi
from calibclip.cir.keywords import mask_tagged
from calibclip.cir.train_phi import batch_indices, lincir_loss, state_path_for, step_noise
from calibclip.cli import app
from calibclip.errors import UserError
from calibclip.testing import _CORPUS

FAST = dict(batch_size=8, lr=1e-3, seed=3)
train_mod = importlib.import_module("calibclip.cir.train_phi")  # the package attribute is the function


def test_keyword_runs_become_one_placeholder():
    tagged = [("a", "DET"), ("big", "ADJ"), ("dog", "NOUN"), ("runs", "VERB"), ("to", "ADP"), ("Paris", "PROPN"),
              (",", "PUNCT"), ("the", "DET"), ("end", "NOUN")]
    assert mask_tagged(tagged, random.Random(0)) == "$ runs to $ , $"
    tag = RuleTagger()
    assert mask_keywords(["a photo of a red car on the left of a blue house", "two dogs sit on the grass.",
                          "make the left square green and remove the hat", "a man riding a bike"],
                         tag, random.Random(0)) == ["$ of $ on $ of $", "two $ sit on $ .",
                                                     "make $ and remove $", "$ riding $"]


def test_masking_fallbacks():
    no_keyword = [("run", "VERB"), ("fast", "ADV"), ("!", "PUNCT")]
    pick = random.Random(5).choice([0, 1])  # one random word (not the punctuation) becomes `$`
    assert mask_tagged(no_keyword, random.Random(5)) == ["$ fast !", "run $ !"][pick]
    assert mask_tagged([("!", "PUNCT")], random.Random(0)) == "a photo of $"
    assert mask_keywords(["", "costs $5 now"], RuleTagger(), random.Random(0))[0] == "a photo of $"
    # a literal `$` is dropped, not kept as a second placeholder
    assert mask_keywords(["a man with $ riding"], RuleTagger(), random.Random(0)) == ["$ with riding"]


def test_tagger_choice():
    assert get_tagger("rules").name == "rules"
    assert get_tagger("auto").name in ("rules", "spacy")
    with pytest.raises(UserError, match="--tagger 'nltk'"):
        get_tagger("nltk")
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="--tagger spacy"):
            get_tagger("spacy")


def test_batch_order_is_a_seeded_stream_of_epochs():
    n, b = 7, 3
    stream = [i for step in range(7) for i in batch_indices(n, b, step, seed=1)]  # 21 positions = 3 epochs
    for e in range(3):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))
    assert stream[:n] != stream[n:2 * n]  # a new permutation each epoch
    assert batch_indices(n, b, 4, seed=1) == stream[12:15]
    wrap = batch_indices(2, 5, 0, seed=0)  # a batch larger than the data spans epochs
    assert len(wrap) == 5 and sorted(wrap[:2]) == sorted(wrap[2:4]) == [0, 1]


def test_loss_is_the_spec_formula(tiny_encoder):
    enc = tiny_encoder
    torch.manual_seed(0)
    phi = build_phi("lincir", enc.dim, enc.token_dim).eval()
    caps = _CORPUS[:4]
    masked = mask_keywords(caps, RuleTagger(), random.Random(0))
    u, eps = step_noise(0, 0, 4, enc.dim)
    with torch.no_grad():
        loss = lincir_loss(enc, phi, caps, masked, u, eps, sigma=1.0)
        ids, mask = enc.tokenize(caps)
        e = enc.text_tower(ids, mask).embeds
        s = phi(e + 1.0 * u * eps)
        ids2, mask2 = enc.tokenize(masked)
        pred = enc.text_tower(ids2, mask2, pseudo_tokens=s).embeds
        want = ((pred - e) ** 2).mean()
        assert all(259 in row for row in ids2.tolist())
    assert torch.allclose(loss, want, atol=1e-6)


def _eval_loss(enc, phi):
    caps = list(_CORPUS)
    u, eps = step_noise(99, 0, len(caps), enc.dim)
    with torch.no_grad():
        return float(lincir_loss(enc, phi.eval(), caps, mask_keywords(caps, RuleTagger(), random.Random(0)),
                                 u, eps, 1.0))


def test_training_lowers_the_loss_and_only_phi_changes(tiny_encoder, tmp_path):
    enc = tiny_encoder
    cfg = PhiTrainConfig(steps=40, **FAST)
    torch.manual_seed(cfg.seed)
    before = _eval_loss(enc, build_phi("lincir", enc.dim, enc.token_dim))  # train_phi's own initialisation
    clip_before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    res = train_phi(enc, _CORPUS, tmp_path / "phi.pt", cfg, progress=False, tagger="rules")
    after = _eval_loss(enc, res.phi)
    assert after < 0.7 * before, (before, after)
    assert len(res.losses) == 40 and res.tagger == "rules"
    assert all(torch.equal(v, clip_before[k]) for k, v in enc.model.state_dict().items())
    assert all(p.requires_grad for p in enc.model.parameters())  # restored after training
    assert all(p.grad is None for p in enc.model.parameters())
    loaded = load_phi(tmp_path / "phi.pt")
    x = torch.randn(3, enc.dim)
    assert torch.equal(loaded(x), res.phi.eval()(x))


def _same(a, b):
    return all(torch.allclose(v, b.state_dict()[k], atol=1e-6) for k, v in a.state_dict().items())


def test_resume_continues_exactly(tiny_encoder, tmp_path, monkeypatch):
    enc = tiny_encoder
    full = train_phi(enc, _CORPUS, tmp_path / "a" / "phi.pt", PhiTrainConfig(steps=6, **FAST), progress=False,
                     tagger="rules")
    # a shorter run extended later
    train_phi(enc, _CORPUS, tmp_path / "b" / "phi.pt", PhiTrainConfig(steps=3, **FAST), progress=False,
              tagger="rules")
    more = train_phi(enc, _CORPUS, tmp_path / "b" / "phi.pt", PhiTrainConfig(steps=6, **FAST), resume=True,
                     progress=False, tagger="rules")
    assert _same(more.phi, full.phi)
    assert more.losses == pytest.approx(full.losses, abs=1e-6)

    # Ctrl-C during step 5 (index 4): the 4 finished steps are saved, resume ends where the full run did
    real, calls = train_mod.lincir_loss, []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "lincir_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_phi(enc, _CORPUS, tmp_path / "c" / "phi.pt", PhiTrainConfig(steps=6, **FAST), save_every=3,
                  progress=False, tagger="rules")
    monkeypatch.setattr(train_mod, "lincir_loss", real)
    assert torch.load(state_path_for(tmp_path / "c" / "phi.pt"), weights_only=True)["step"] == 4
    resumed = train_phi(enc, _CORPUS, tmp_path / "c" / "phi.pt", PhiTrainConfig(steps=6, **FAST), resume=True,
                        progress=False, tagger="rules")
    assert _same(resumed.phi, full.phi)
    assert _same(load_phi(tmp_path / "c" / "phi.pt"), full.phi)


def test_resume_errors(tiny_encoder, tmp_path):
    enc = tiny_encoder
    out = tmp_path / "phi.pt"
    with pytest.raises(UserError, match="phi.train.pt not found"):
        train_phi(enc, _CORPUS, out, PhiTrainConfig(steps=2, **FAST), resume=True, progress=False, tagger="rules")
    train_phi(enc, _CORPUS, out, PhiTrainConfig(steps=2, **FAST), progress=False, tagger="rules")
    with pytest.raises(UserError, match="--lr 0.001 → 0.01"):
        train_phi(enc, _CORPUS, out, PhiTrainConfig(steps=3, **{**FAST, "lr": 1e-2}), resume=True, progress=False,
                  tagger="rules")
    with pytest.raises(UserError, match="captions differ"):
        train_phi(enc, _CORPUS[:5], out, PhiTrainConfig(steps=3, **FAST), resume=True, progress=False,
                  tagger="rules")
    with pytest.raises(UserError, match="no captions"):
        train_phi(enc, ["", "  "], out, PhiTrainConfig(steps=3, **FAST), progress=False, tagger="rules")


def test_train_phi_cli(tiny_model_dir, tmp_path):
    caps = tmp_path / "captions.txt"
    caps.write_text("\n".join(_CORPUS) + "\n\n", encoding="utf-8")
    out = tmp_path / "phi.pt"
    runner = CliRunner()
    args = ["train-phi", "--model", str(tiny_model_dir), "--captions", str(caps), "--out", str(out),
            "--batch-size", "4", "--tagger", "rules", "--device", "cpu", "--quiet"]
    r = runner.invoke(app, args + ["--steps", "2"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and load_phi(out).output_dim == 32 and state_path_for(out).exists()
    r = runner.invoke(app, args + ["--steps", "3", "--resume"])
    assert r.exit_code == 0, r.output
    assert torch.load(state_path_for(out), weights_only=True)["step"] == 3
    for bad, msg in [(["--captions", str(tmp_path / "none.txt")], "none.txt: no such file"),
                     (["--kind", "mlp"], "--kind 'mlp'"), (["--tagger", "nltk"], "--tagger 'nltk'")]:
        r = runner.invoke(app, args + bad)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
