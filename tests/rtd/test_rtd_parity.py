"""Issue 15 (training side) and 16.15 for RTD: the official loader's text cleaning, the official
checkpoint format, precision of the trainable tower, and resume refusing another model."""

from __future__ import annotations

import warnings

import pytest
import torch
from typer.testing import CliRunner

import calibclip
from calibclip.cir.precision import autocast_for
from calibclip.cir.rtd import (RTDConfig, Triplet, export_rtd, load_rtd, make_trainable_tower, make_triplets,
                               noise_for, output_paths, queries_and_keys, read_rtd, save_rtd, train_rtd)
from calibclip.cir.rtd.text import clean_triplets
from calibclip.cir.textclean import clean_caption
from calibclip.cli import app
from calibclip.errors import UserError
from calibclip.testing import _CORPUS, tiny_clip

FAST = dict(batch_size=6, accum=2, lr=1e-3, seed=7)


def official_clean_caption(caption, tokenizer):
    """jaeseokbyun/RTD loader.py clean_caption, re-implemented by hand from the source."""
    if caption is None:
        caption = ''
    if '<PERSON>' in caption:
        caption = caption.replace('<PERSON>', 'person')
    caption = caption.lower().replace('$', '').strip()
    tokens = tokenizer.encode(caption, padding='longest', return_tensors='pt')
    if tokens.shape[1] > 77:
        caption = tokenizer.batch_decode(tokens[:, 1:76])[0]
    return caption


@pytest.fixture(scope="module")
def triplets():
    return make_triplets(_CORPUS, seed=0, per_caption=3)[0]


def make_phi(enc):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(enc.dim, 2 * enc.dim), torch.nn.GELU(),
                               torch.nn.Linear(2 * enc.dim, enc.token_dim)).eval()


def test_clean_caption_equals_the_official_loader(tiny_encoder):
    tok = tiny_encoder.tokenizer
    long = " ".join(["a red car near a dog"] * 30)
    cases = ["A <PERSON> holding a $5 bill  ", "<person> on a beach", "Two $ signs $$ here", None, "",
             "  The <PERSON> and <PERSON>'s dog. ", long, long + " $ <PERSON>"]
    for c in cases:
        assert clean_caption(c, tok) == official_clean_caption(c, tok), c
    assert clean_caption("A <PERSON> holding a $5 bill  ", tok) == "a person holding a 5 bill"
    assert clean_caption("<person> on a beach", tok) == "<person> on a beach"  # case-sensitive rule
    cut = clean_caption(long, tok)
    assert len(cut) < len(long) and tiny_encoder.token_count(cut) <= 77


def test_conditioning_dollar_takes_the_pseudo_token_like_the_official_run(tiny_encoder):
    enc, phi = tiny_encoder, make_phi(tiny_encoder)
    raw = [Triplet("A <PERSON> with a $ red car", "make it $ blue", "a person with a blue car"),
           Triplet("a dog on a table", "replace the dog with a cat", "a cat on a table")]
    official = clean_triplets(raw, enc.tokenizer)
    assert official[0] == Triplet("a person with a  red car", "make it $ blue", "a person with a blue car")
    ids, _ = enc.tokenize([f"a photo of $ that {official[0].conditioning}"])
    assert int((ids == enc.placeholder_id).sum()) == 2  # both slots take the pseudo token
    cfg = RTDConfig(refined_batch=False)
    u, eps = noise_for(cfg, 0, 0, 2, enc.dim)
    tower = make_trainable_tower(enc)
    with torch.no_grad():
        q, _ = queries_and_keys(enc, tower, phi, official, cfg, u, eps)
        r = enc.text_tower(*enc.tokenize([t.reference for t in official])).embeds
        s = phi(r + cfg.sigma * u * eps)
        ids, mask = enc.tokenize([f"a photo of $ that {t.conditioning}" for t in official])
        want = enc.text_tower(ids, mask, pseudo_tokens=s, text_model=tower).embeds  # every '$' → s
    torch.testing.assert_close(q, want, atol=1e-5, rtol=1e-4)
    dropped = clean_triplets(raw, enc.tokenizer, cond_dollar="drop")
    assert dropped[0].conditioning == "make it  blue" and dropped[1] == official[1]
    with pytest.raises(UserError, match="--cond-dollar"):
        RTDConfig(cond_dollar="space")


def test_official_checkpoint_format_round_trip(tiny_model_dir, tmp_path):
    from transformers import CLIPTextModelWithProjection

    enc = calibclip.load(str(tiny_model_dir), device="cpu")
    tower = make_trainable_tower(enc)
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ours = save_rtd(enc, tower, tmp_path / "ours.pt", step=7)
    off = tmp_path / "text_encoder_best.pt"
    export_rtd(ours, off, "official")
    obj = torch.load(off, weights_only=True)
    assert set(obj) == {"epoch", "CLIPTextModelWithProjection"} and obj["epoch"] == 7
    hf = CLIPTextModelWithProjection(enc.model.config.text_config)
    hf.load_state_dict(obj["CLIPTextModelWithProjection"], strict=True)  # what official validate.py does
    # an official file (also one with the stale position_ids buffer of old transformers) loads as --rtd
    obj["CLIPTextModelWithProjection"]["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save(obj, tmp_path / "old.pt")
    feats = {}
    for name in ("ours.pt", "text_encoder_best.pt", "old.pt"):
        e = calibclip.load(str(tiny_model_dir), device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = load_rtd(e, tmp_path / name)
        feats[name] = e.text_features(["a red car", "a dog on a table"])
        assert meta["step"] == 7
    assert torch.equal(feats["ours.pt"], feats["text_encoder_best.pt"])
    assert torch.equal(feats["ours.pt"], feats["old.pt"])
    # and back through the CLI, with the base model recorded again
    back = tmp_path / "back.pt"
    r = CliRunner().invoke(app, ["rtd", "export", str(off), str(back), "--format", "calibclip", "--model",
                                 str(tiny_model_dir)])
    assert r.exit_code == 0, r.output
    a, b = read_rtd(ours), read_rtd(back)
    assert b["source"] == "calibclip" and b["signature"] == a["signature"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    r = CliRunner().invoke(app, ["rtd", "export", str(off), str(back), "--format", "calibclip"])
    assert r.exit_code == 2 and "--model" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["rtd", "export", str(ours), str(back), "--format", "onnx"])
    assert r.exit_code == 2 and "--format 'onnx'" in r.output


def test_trainable_parts_are_float32_and_amp_modes(tiny_model_dir, triplets, tmp_path):
    assert RTDConfig(amp=True).amp == "fp16" and RTDConfig(amp=False).amp == "off"  # the old bool
    assert RTDConfig(amp="fp16").amp == "fp16" and RTDConfig().amp == "off"
    with pytest.raises(UserError, match="--amp 'fp8'"):
        RTDConfig(amp="fp8")
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        autocast_for("cpu", "fp16")
    enc = calibclip.load(str(tiny_model_dir), device="cpu")
    enc.model.to(torch.bfloat16)  # a base checkpoint saved in bf16
    assert all(p.dtype == torch.float32 for p in make_trainable_tower(enc).parameters())
    res = train_rtd(enc, make_phi(enc), triplets, tmp_path / "rtd.pt", RTDConfig(steps=2, amp="bf16", **FAST),
                    progress=False, plot=False)  # bf16 autocast works on CPU
    assert all(torch.isfinite(torch.tensor(res.losses)))
    assert all(v.dtype == torch.float32 for v in read_rtd(tmp_path / "rtd.pt")["state_dict"].values())
    path = tmp_path / "t.jsonl"
    from calibclip.cir.rtd import write_triplets
    write_triplets(triplets[:6], path)
    r = CliRunner().invoke(app, ["rtd", "train", "--model", str(tiny_model_dir), "--triplets", str(path), "--out",
                                 str(tmp_path / "o.pt"), "--naive-concat", "--device", "cpu", "-q", "--amp", "fp16"])
    assert r.exit_code == 2 and "fp16 needs a CUDA" in r.output and "Traceback" not in r.output


def test_resume_refuses_another_model_or_a_damaged_state(tiny_model_dir, tiny_encoder, triplets, tmp_path):
    enc = tiny_encoder
    out = tmp_path / "rtd.pt"
    cfg = RTDConfig(steps=2, **FAST)
    train_rtd(enc, make_phi(enc), triplets, out, cfg, progress=False, plot=False)
    more = RTDConfig(steps=3, **FAST)
    same_shapes = calibclip.load(str(tiny_clip(tmp_path / "s1", seed=1)), device="cpu")
    with pytest.raises(UserError, match="another model"):
        train_rtd(same_shapes, make_phi(same_shapes), triplets, out, more, resume=True, progress=False, plot=False)
    wider = calibclip.load(str(tiny_clip(tmp_path / "w", seed=0, width=48, heads=4)), device="cpu")
    with pytest.raises(UserError, match="other sizes"):
        train_rtd(wider, make_phi(wider), triplets, out, more, resume=True, progress=False, plot=False)
    state = output_paths(out)["state"]
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(UserError, match="cannot be read"):
        train_rtd(enc, make_phi(enc), triplets, out, more, resume=True, progress=False, plot=False)
    path = tmp_path / "t.jsonl"
    from calibclip.cir.rtd import write_triplets
    write_triplets(triplets, path)
    r = CliRunner().invoke(app, ["rtd", "train", "--model", str(tiny_model_dir), "--triplets", str(path), "--out",
                                 str(out), "--naive-concat", "--device", "cpu", "-q", "--resume", "--steps", "3"])
    assert r.exit_code == 2 and "cannot be read" in r.output and "Traceback" not in r.output


def test_ctrl_c_inside_the_optimiser_step_is_committed(tiny_encoder, triplets, tmp_path, sigint_after_update):
    enc, phi = tiny_encoder, make_phi(tiny_encoder)
    cfg = RTDConfig(steps=3, **FAST)
    full = train_rtd(enc, phi, triplets, tmp_path / "a" / "rtd.pt", cfg, progress=False, plot=False)
    # Ctrl-C at the end of the 2nd update
    with sigint_after_update(2), pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_rtd(enc, phi, triplets, tmp_path / "b" / "rtd.pt", cfg, progress=False, plot=False)
    state = torch.load(output_paths(tmp_path / "b" / "rtd.pt")["state"], weights_only=True)
    assert state["step"] == 2 and len(state["losses"]) == 2  # weights of step 2 with step 2 recorded
    resumed = train_rtd(enc, phi, triplets, tmp_path / "b" / "rtd.pt", cfg, resume=True, progress=False, plot=False)
    assert resumed.losses == full.losses
    a, b = read_rtd(tmp_path / "a" / "rtd.pt")["state_dict"], read_rtd(tmp_path / "b" / "rtd.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_cli_refuses_a_phi_of_another_dimension(tiny_model_dir, triplets, tmp_path):
    from calibclip.cir import build_phi

    from calibclip.cir.rtd import write_triplets
    path = tmp_path / "t.jsonl"
    write_triplets(triplets[:6], path)
    base = ["rtd", "train", "--model", str(tiny_model_dir), "--triplets", str(path), "--out", str(tmp_path / "o.pt"),
            "--device", "cpu", "-q", "--steps", "1", "--batch-size", "3", "--accum", "1"]
    save_phi_path = tmp_path / "wide-phi.pt"
    from calibclip.cir import save_phi
    save_phi(build_phi("lincir", 48, 48), save_phi_path)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for phi, msg in [(save_phi_path, "48 → 48"), (tmp_path / "text.pt", "text.pt")]:
        r = CliRunner().invoke(app, base + ["--phi", str(phi)])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
