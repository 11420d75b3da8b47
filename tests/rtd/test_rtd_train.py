"""RTD on the tiny model: the (q, k) construction of the spec, frozen parts, learning, exact resume,
the saved tower loading into an encoder, and the train CLI."""

from __future__ import annotations

import warnings

import pytest
import torch
from typer.testing import CliRunner

import calibclip
from calibclip.cir.rtd import (RTDConfig, load_rtd, make_trainable_tower, make_triplets, noise_for,
                               output_paths, queries_and_keys, read_rtd, rtd_loss, train_rtd, write_triplets)
from calibclip.cli import app
from calibclip.errors import UserError
from calibclip.testing import _CORPUS, tiny_clip

FAST = dict(batch_size=6, accum=2, lr=1e-3, seed=7)


def make_phi(enc) -> torch.nn.Module:
    """A small stand-in φ (D → D_tok) with dropout, so eval-mode matters."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(enc.dim, 4 * enc.dim), torch.nn.GELU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(4 * enc.dim, enc.token_dim)).eval()


@pytest.fixture(scope="module")
def triplets():
    return make_triplets(_CORPUS, seed=0, per_caption=3)[0]


def _encode(enc, texts, tower=None, pseudo=None):
    ids, mask = enc.tokenize(texts)
    return enc.text_tower(ids, mask, pseudo_tokens=pseudo, text_model=tower).embeds


def test_queries_and_keys_follow_the_spec(tiny_encoder, triplets):
    enc, phi = tiny_encoder, make_phi(tiny_encoder)
    batch = triplets[:3]
    cfg = RTDConfig(sigma=0.5, seed=1)
    u, eps = noise_for(cfg, step=0, micro=0, batch=3, dim=enc.dim)
    tower = make_trainable_tower(enc)
    with torch.no_grad():
        q, k = queries_and_keys(enc, tower, phi, batch, cfg, u, eps)
        r = _encode(enc, [t.reference for t in batch])
        s = phi(r + 0.5 * u * eps)
        q_mod = _encode(enc, [f"a photo of $ that {t.conditioning}" for t in batch], tower, s)
        q_ref = _encode(enc, ["a photo of $"] * 3, tower, s)
        k_tgt = _encode(enc, [t.target for t in batch])
    assert q.shape == k.shape == (6, enc.dim)
    torch.testing.assert_close(q, torch.cat([q_mod, q_ref]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(k, torch.cat([k_tgt, r]), atol=1e-5, rtol=1e-4)
    # the noise matters (σ > 0) and is a pure function of (seed, step, micro)
    u2, eps2 = noise_for(cfg, 0, 0, 3, enc.dim)
    assert torch.equal(u, u2) and torch.equal(eps, eps2) and not torch.equal(eps, noise_for(cfg, 0, 1, 3, enc.dim)[1])
    # ablations: shapes and what encodes what
    plain = RTDConfig(refined_batch=False)
    with torch.no_grad():
        q1, k1 = queries_and_keys(enc, tower, phi, batch, plain, u, eps)
    assert q1.shape == (3, enc.dim)
    torch.testing.assert_close(q1, q_mod, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(k1, k_tgt, atol=1e-5, rtol=1e-4)
    naive = RTDConfig(naive_concat=True)
    with torch.no_grad():
        qn, _ = queries_and_keys(enc, tower, None, batch, naive)
        want = _encode(enc, [f"a photo of {t.reference} that {t.conditioning}" for t in batch]
                       + [f"a photo of {t.reference}" for t in batch], tower)
    torch.testing.assert_close(qn, want, atol=1e-5, rtol=1e-4)


def test_gradients_reach_only_the_trainable_copy(tiny_encoder, triplets):
    enc, phi = tiny_encoder, make_phi(tiny_encoder)
    for p in phi.parameters():
        p.requires_grad_(True)  # even when trainable-by-flag, φ must get no gradient
    tower = make_trainable_tower(enc)
    for cfg in (RTDConfig(), RTDConfig(anchor=False)):
        u, eps = noise_for(cfg, 0, 0, 4, enc.dim)
        q, k = queries_and_keys(enc, tower, phi, triplets[:4], cfg, u, eps)
        assert q.requires_grad and k.requires_grad == (not cfg.anchor)
        rtd_loss(q, k).backward()
        named = dict(tower.named_parameters())
        for name in ("embeddings.token_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight",
                     "final_layer_norm.weight", "text_projection.weight"):
            assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
        assert all(p.grad is None for p in enc.model.parameters())
        assert all(p.grad is None for p in phi.parameters())
        tower.zero_grad(set_to_none=True)
    # the copy is independent: its parameters are not the encoder's
    assert tower.embeddings.token_embedding.weight.data_ptr() != enc.model.text_model.embeddings.token_embedding.weight.data_ptr()


def test_training_lowers_the_loss_and_leaves_frozen_parts_alone(tiny_encoder, triplets, tmp_path):
    enc, phi = tiny_encoder, make_phi(tiny_encoder)
    before_model = {k: v.clone() for k, v in enc.model.state_dict().items()}
    before_phi = {k: v.clone() for k, v in phi.state_dict().items()}
    cfg = RTDConfig(steps=8, **FAST)
    res = train_rtd(enc, phi, triplets, tmp_path / "rtd.pt", cfg, progress=False)
    assert len(res.losses) == 8

    def fixed_loss(tower):  # same batch, same noise, before vs after
        u, eps = noise_for(cfg, 99, 0, 12, enc.dim)
        with torch.no_grad():
            return float(rtd_loss(*queries_and_keys(enc, tower, phi, triplets[:12], cfg, u, eps)))

    assert fixed_loss(res.tower) < fixed_loss(make_trainable_tower(enc)) - 0.3
    assert sum(res.losses[-2:]) < sum(res.losses[:2])
    assert all(torch.equal(v, before_model[k]) for k, v in enc.model.state_dict().items())
    assert all(torch.equal(v, before_phi[k]) for k, v in phi.state_dict().items())
    assert all(p.requires_grad for p in enc.model.parameters())  # flags restored
    paths = output_paths(tmp_path / "rtd.pt")
    assert paths["out"].exists() and paths["state"].exists()
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_rtd(paths["out"])["step"] == 8


@pytest.mark.parametrize("error,saved_at", [(RuntimeError, 2), (KeyboardInterrupt, 4)])
def test_resume_continues_exactly(tiny_encoder, triplets, tmp_path, error, saved_at):
    enc, phi = tiny_encoder, make_phi(tiny_encoder)
    cfg = RTDConfig(steps=5, **FAST)
    full = train_rtd(enc, phi, triplets, tmp_path / "a" / "rtd.pt", cfg, progress=False, plot=False)

    def crash_at_4(e):  # a crash right after step 4: the periodic state is from step 2, and
        raise error     # an interrupt (Ctrl-C) also saves the finished step 4

    with pytest.raises(error), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_rtd(enc, phi, triplets, tmp_path / "b" / "rtd.pt", cfg, save_every=2, validate=crash_at_4,
                  val_every=4, progress=False, plot=False)
    state = torch.load(output_paths(tmp_path / "b" / "rtd.pt")["state"], weights_only=True)
    assert state["step"] == saved_at and len(state["losses"]) == saved_at
    resumed = train_rtd(enc, phi, triplets, tmp_path / "b" / "rtd.pt", cfg, save_every=2, resume=True,
                        progress=False, plot=False)
    assert resumed.losses == full.losses  # bit-identical sequence: saved steps from the state, the rest recomputed
    a, b = read_rtd(tmp_path / "a" / "rtd.pt")["state_dict"], read_rtd(tmp_path / "b" / "rtd.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # changed settings cannot silently continue
    with pytest.raises(UserError, match="lr"):
        train_rtd(enc, phi, triplets, tmp_path / "b" / "rtd.pt", RTDConfig(steps=6, **{**FAST, "lr": 1e-4}),
                  resume=True, progress=False, plot=False)
    assert all(p.requires_grad for p in enc.model.parameters())  # a refused resume leaves the encoder as it was


def test_validation_keeps_the_best_checkpoint(tiny_encoder, triplets, tmp_path):
    enc, phi = tiny_encoder, make_phi(tiny_encoder)
    scores = iter([0.2, 0.9, 0.5])
    seen = []

    def validate(e):  # the encoder runs the current trained tower during validation
        seen.append(_encode(e, ["a red car"]).detach().clone())
        return {"R@1": next(scores), "R@5": 1.0}

    res = train_rtd(enc, phi, triplets, tmp_path / "rtd.pt", RTDConfig(steps=3, **FAST), validate=validate,
                    val_every=1, progress=False)
    assert [v["step"] for v in res.val] == [1, 2, 3]
    assert res.best == {"metric": "R@1", "value": 0.9, "step": 2}
    assert read_rtd(res.best_path)["step"] == 2
    assert not torch.allclose(seen[0], seen[2])  # the tower changed between validations
    torch.testing.assert_close(_encode(enc, ["a red car"]), _encode(enc, ["a red car"]))
    assert enc.model.text_model is not res.tower  # original tower restored after validation


def test_load_rtd_swaps_the_text_tower_only(tiny_model_dir, triplets, tmp_path):
    enc = calibclip.load(str(tiny_model_dir), device="cpu")
    phi = make_phi(enc)
    res = train_rtd(enc, phi, triplets, tmp_path / "rtd.pt", RTDConfig(steps=3, **FAST), progress=False,
                    plot=False)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    img_before = enc.image_features(pixels)
    txt_before = enc.text_features(["a red car", "a dog on a table"])
    with torch.no_grad():
        want = torch.nn.functional.normalize(_encode(enc, ["a red car", "a dog on a table"], res.tower), dim=-1)
    meta = load_rtd(enc, tmp_path / "rtd.pt")
    assert meta["step"] == 3 and meta["config"]["lr"] == 1e-3
    txt_after = enc.text_features(["a red car", "a dog on a table"])
    assert (txt_after - txt_before).abs().max() > 1e-3
    torch.testing.assert_close(txt_after, want, atol=1e-5, rtol=1e-4)
    assert torch.equal(enc.image_features(pixels), img_before)


def test_load_rtd_rejects_other_models(tiny_model_dir, tmp_path):
    enc = calibclip.load(str(tiny_model_dir), device="cpu")
    ckpt = tmp_path / "rtd.pt"
    from calibclip.cir.rtd import save_rtd

    save_rtd(enc, make_trainable_tower(enc), ckpt)
    other_seed = calibclip.load(str(tiny_clip(tmp_path / "seed1", seed=1)), device="cpu")  # same shapes
    with pytest.raises(UserError, match="image tower"):
        load_rtd(other_seed, ckpt)
    wider = calibclip.load(str(tiny_clip(tmp_path / "wide", seed=0, width=48, heads=4)), device="cpu")
    with pytest.raises(UserError, match="different text tower"):
        load_rtd(wider, ckpt)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        load_rtd(enc, tmp_path / "junk.pt")
    with pytest.raises(UserError, match="no such file"):
        load_rtd(enc, tmp_path / "missing.pt")


def test_train_cli_naive_concat_reports_bad_rows(tiny_model_dir, triplets, tmp_path):
    path = tmp_path / "t.jsonl"
    write_triplets(triplets[:10], path)
    with open(path, "a") as f:
        f.write("{broken\n")
    out = tmp_path / "rtd.pt"
    args = ["rtd", "train", "--model", str(tiny_model_dir), "--triplets", str(path), "--out", str(out),
            "--steps", "2", "--batch-size", "4", "--accum", "1", "--naive-concat", "--device", "cpu", "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "t.jsonl:11:" in r.output and "trained" in r.output and out.exists()
    r = CliRunner().invoke(app, args[:-4] + ["--device", "cpu", "-q"])  # no φ and no --naive-concat
    assert r.exit_code == 2 and "--phi is required" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, args + ["--amp", "fp16"])  # --amp takes a mode since issue 15.4
    assert r.exit_code == 2 and "CUDA" in r.output


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision is CUDA-only")
def test_amp_training_on_cuda_learns_and_resumes_exactly(tiny_model_dir, triplets, tmp_path):
    enc = calibclip.load(str(tiny_model_dir), device="cuda")
    phi = make_phi(enc)
    cfg = RTDConfig(steps=6, amp=True, **FAST)
    full = train_rtd(enc, phi, triplets, tmp_path / "a" / "rtd.pt", cfg, progress=False, plot=False)
    assert sum(full.losses[-2:]) < sum(full.losses[:2])
    train_rtd(enc, phi, triplets, tmp_path / "b" / "rtd.pt", RTDConfig(steps=3, amp=True, **FAST), progress=False,
              plot=False)
    resumed = train_rtd(enc, phi, triplets, tmp_path / "b" / "rtd.pt", cfg, resume=True, progress=False, plot=False)
    assert resumed.losses == full.losses
    load_rtd(enc, tmp_path / "a" / "rtd.pt")  # a CUDA-trained checkpoint loads (saved on CPU, float32)


def test_train_cli_val_option_errors(tiny_model_dir, triplets, tmp_path):
    path = tmp_path / "t.jsonl"
    write_triplets(triplets[:4], path)
    base = ["rtd", "train", "--model", str(tiny_model_dir), "--triplets", str(path), "--out", str(tmp_path / "o.pt"),
            "--naive-concat", "--device", "cpu", "-q"]
    for val, msg in [("nosuch:" + str(tmp_path), "unknown dataset"), ("cirr:" + str(tmp_path / "missing"), "no such"),
                     ("flickr30k:" + str(tmp_path), "composed-retrieval"), ("cirr", "NAME:ROOT"),
                     ("cirr:" + str(tmp_path), "--val needs --phi")]:
        r = CliRunner().invoke(app, base + ["--val", val])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (val, r.output)
