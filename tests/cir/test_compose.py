"""Composed queries on the tiny model: pseudo-token injection against HF's own modules, the
word-token identity, prompts, batching, FashionIQ's symmetric query, CalibCLIP feature sets and
composed search through an index and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from calibclip.calib import CalibConfig, image_feature_set, text_feature_set
from calibclip.cir import (build_phi, check_prompt, composed_feature_set, composed_text_embeds, composed_texts,
                           cve_reference_embeds, encode_composed, fashioniq_feature_set, fashioniq_query,
                           fashioniq_texts, save_phi)
from calibclip.errors import UserError


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(40, 48, 3) * 255).astype("uint8")) for _ in range(n)]


class TablePhi(nn.Module):
    """φ that outputs the token embedding of word i for the i-th known reference image (nearest match)."""

    def __init__(self, enc, refs: list[Image.Image], words: list[str]) -> None:
        super().__init__()
        self.input_dim, self.output_dim = enc.dim, enc.token_dim
        with torch.no_grad():
            self.register_buffer("keys", enc.image_tower(enc.preprocess(refs)).embeds.clone())
        ids = [enc.tokenizer.convert_tokens_to_ids(w + "</w>") for w in words]
        assert enc.tokenizer.unk_token_id not in ids
        self.register_buffer("table", enc.model.text_model.embeddings.token_embedding.weight[ids].detach().clone())
        self.anchor = nn.Parameter(torch.zeros(1))  # gives φ a parameter (device/dtype source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[torch.cdist(x.float(), self.keys).argmin(dim=1)]


def hf_injected_features(enc, texts: list[str], s: torch.Tensor) -> torch.Tensor:
    """Reference: HF's own CLIPModel.get_text_features with the '$' token embeddings replaced by a hook."""
    ids, mask = enc.tokenize(texts)
    emb = enc.model.text_model.embeddings.token_embedding

    def hook(_module, _inp, out):
        out = out.clone()
        for b in range(out.shape[0]):
            out[b, ids[b] == 259] = s[b]
        return out

    handle = emb.register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = enc.model.get_text_features(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_injection_equals_hf_modules_by_hand(tiny_encoder):
    enc = tiny_encoder
    assert enc.placeholder_id == 259
    torch.manual_seed(0)
    texts = ["is red", "has a hat and long sleeves, is blue", "x"]
    s = torch.randn(3, enc.token_dim)
    with torch.no_grad():
        ours = composed_text_embeds(enc, s, texts)
    ref = hf_injected_features(enc, composed_texts(texts), s)
    assert torch.allclose(ours, ref, atol=1e-5)
    # and the pseudo token matters: another s gives another feature
    with torch.no_grad():
        other = composed_text_embeds(enc, torch.randn(3, enc.token_dim), texts)  # (s + c·1 would not: LN)
    assert (other - ours).abs().max() > 1e-3


def test_word_token_phi_equals_plain_text(tiny_encoder):
    enc = tiny_encoder
    refs, words = images(3), ["dog", "cat", "hat"]
    phi = TablePhi(enc, refs, words)
    texts = ["x", "is red and on the left of a blue house", "has a hat"]
    q = encode_composed(enc, refs, texts, phi, batch_size=2)  # two batches, padding inside the first
    want = enc.encode_texts([f"a photo of {w} that {t}" for w, t in zip(words, texts)])
    assert q.shape == (3, enc.dim) and q.dtype == np.float32
    np.testing.assert_allclose(q, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # a prefix of the batch gives the same rows; a custom prompt with the text first
    np.testing.assert_allclose(encode_composed(enc, refs[:1], ["x"], phi), want[:1], atol=1e-5)
    q2 = encode_composed(enc, refs[1:2], ["red"], phi, prompt="{} $")
    np.testing.assert_allclose(q2, enc.encode_texts(["red cat"]), atol=1e-5)


def test_dollar_in_user_text_does_not_take_the_pseudo_token(tiny_encoder):
    enc = tiny_encoder
    refs = images(1)
    phi = TablePhi(enc, refs, ["dog"])
    np.testing.assert_allclose(encode_composed(enc, refs, ["costs 5$"], phi),
                               enc.encode_texts(["a photo of dog that costs 5"]), atol=1e-5)


def test_prompt_validation_and_input_errors(tiny_encoder):
    enc = tiny_encoder
    phi = build_phi("lincir", enc.dim, enc.token_dim)
    assert check_prompt("a photo of $ that {}") == "a photo of $ that {}"
    for bad in ["a photo of that {}", "a photo of $", "$ {} and {}", "$ {0} {x}", "$ {"]:
        with pytest.raises(UserError, match="--prompt"):
            encode_composed(enc, images(1), ["x"], phi, prompt=bad)
    with pytest.raises(UserError, match="1 reference image"):
        encode_composed(enc, images(1), ["x", "y"], phi)
    wrong = build_phi("lincir", enc.dim + 1, enc.token_dim)
    with pytest.raises(UserError, match=f"needs {enc.dim} → {enc.token_dim}"):
        encode_composed(enc, images(1), ["x"], wrong)
    long = " ".join(["red"] * 100)
    with pytest.raises(UserError, match="cut off"):
        encode_composed(enc, images(1), [long], phi, prompt="{} $")


def test_phi_runs_in_eval_mode_and_keeps_its_mode(tiny_encoder):
    enc = tiny_encoder
    torch.manual_seed(1)
    phi = build_phi("lincir", enc.dim, enc.token_dim).train()  # dropout 0.5 would make queries random
    a = encode_composed(enc, images(2), ["x", "y"], phi)
    b = encode_composed(enc, images(2), ["x", "y"], phi)
    np.testing.assert_array_equal(a, b)
    assert phi.training
    with torch.no_grad():
        s = phi.eval()(enc.image_tower(enc.preprocess(images(2))).embeds)
        want = torch.nn.functional.normalize(composed_text_embeds(enc, s, ["x", "y"]), dim=-1).numpy()
    np.testing.assert_allclose(a, want, atol=1e-6)


def test_composed_text_embeds_passes_gradients_to_s(tiny_encoder):
    enc = tiny_encoder
    s = torch.randn(2, enc.token_dim, requires_grad=True)
    composed_text_embeds(enc, s, ["x", "is red"]).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    enc.model.zero_grad(set_to_none=True)


def test_fashioniq_symmetric_query(tiny_encoder):
    enc = tiny_encoder
    assert fashioniq_texts("Is red.", " has long sleeves?") == ("Is red and has long sleeves",
                                                                  "has long sleeves and Is red")
    refs, words = images(2), ["dog", "cat"]
    phi = TablePhi(enc, refs, words)
    caps = [("is red.", "is short,"), ("has a hat?", "is blue")]
    q = fashioniq_query(enc, refs, caps, phi)
    f1 = enc.encode_texts(["a photo of dog that is red and is short", "a photo of cat that has a hat and is blue"])
    f2 = enc.encode_texts(["a photo of dog that is short and is red", "a photo of cat that is blue and has a hat"])
    want = f1 + f2
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(q, want, atol=1e-5)
    np.testing.assert_allclose(fashioniq_feature_set(enc, refs, caps, phi)["plain"], want, atol=1e-5)


@pytest.fixture
def calibrated(tiny_encoder):
    """The shared tiny encoder with a calibration set for one test (restored afterwards)."""
    def use(cfg):
        tiny_encoder.calibration = cfg
        return tiny_encoder
    yield use
    tiny_encoder.calibration = None


# CVE thresholds that suppress every low-information patch of the tiny model, so CVE really changes features
FORCE_CVE = dict(tau_d=-20.0, tau_s=-10.0, target_sigma=1.5)


def test_cve_reference_embeds_match_calib_features(tiny_encoder):
    enc = tiny_encoder
    pv = enc.preprocess(images(3))
    cfg = CalibConfig(**FORCE_CVE)
    with torch.no_grad():
        plain, cve = cve_reference_embeds(enc, pv, cfg)
        feats = image_feature_set(enc, pv, cfg)
        n = torch.nn.functional.normalize
        assert (n(cve, dim=-1) - n(plain, dim=-1)).abs().max() > 1e-3
        assert torch.allclose(n(cve, dim=-1), feats["cve"], atol=1e-5)
        assert torch.allclose(n(plain, dim=-1), feats["plain"], atol=1e-5)
        p2, c2 = cve_reference_embeds(enc, pv, CalibConfig(cve=False, **FORCE_CVE))
        assert torch.equal(p2, c2) and torch.allclose(p2, plain)


def test_composed_feature_set_without_and_with_calibration(calibrated):
    enc = calibrated(None)
    torch.manual_seed(2)
    phi = build_phi("lincir", enc.dim, enc.token_dim).eval()
    refs, texts = images(3, seed=5), ["is red", "has a dog and a hat on the left", "make the car blue"]
    plain = encode_composed(enc, refs, texts, phi)
    assert set(composed_feature_set(enc, refs, texts, phi)) == {"plain"}

    off = calibrated(CalibConfig(cve=False, dcc=False))
    f = composed_feature_set(off, refs, texts, phi)
    np.testing.assert_allclose(f["plain"], plain, atol=1e-6)
    np.testing.assert_allclose(f["dcc"], plain, atol=1e-6)

    cfg = CalibConfig(**FORCE_CVE)
    enc = calibrated(cfg)
    f = composed_feature_set(enc, refs, texts, phi, batch_size=2)
    np.testing.assert_allclose(f["plain"], plain, atol=1e-6)  # first stage: the uncalibrated query
    with torch.no_grad():
        _, cve = cve_reference_embeds(enc, enc.preprocess(refs), cfg)
        want = text_feature_set(enc, composed_texts(texts), cfg, pseudo_tokens=phi(cve))["dcc"].numpy()
    np.testing.assert_allclose(f["dcc"], want, atol=1e-5)
    assert np.abs(f["dcc"] - plain).max() > 1e-3


def test_composed_search_through_index_and_cli(tiny_model_dir, tmp_path):
    """End to end: `calibclip index` a folder, then `calibclip search --image --text --phi` ranks the
    gallery by q·g with q = encode_composed(...)."""
    from typer.testing import CliRunner

    import calibclip
    from calibclip.cli import app

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, im in enumerate(images(5, seed=9)):
        im.save(folder / f"im{i}.png")
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(folder), "--model", str(tiny_model_dir), "--out", str(tmp_path / "p.idx"),
                            "--dtype", "float32", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    enc = calibclip.load(str(tiny_model_dir), device="cpu")
    torch.manual_seed(3)
    phi_path = save_phi(build_phi("lincir", enc.dim, enc.token_dim), tmp_path / "phi.pt")
    ref = folder / "im0.png"
    r = runner.invoke(app, ["search", str(tmp_path / "p.idx"), "--image", str(ref), "--text", "is red",
                            "--phi", str(phi_path), "--json", "--top-k", "5", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    got = [Path(h["path"]).name for h in json.loads(r.stdout[r.stdout.index("["):])]
    phi = calibclip.cir.load_phi(phi_path)
    q = encode_composed(enc, [Image.open(ref).convert("RGB")], ["is red"], phi)
    g = enc.encode_images([Image.open(folder / f"im{i}.png").convert("RGB") for i in range(5)])
    want = [f"im{i}.png" for i in np.argsort(-(g @ q[0]), kind="stable")]
    assert got == [w for w in want if w != "im0.png"]  # the reference is left out by default (#17.4)
    r = runner.invoke(app, ["search", str(tmp_path / "p.idx"), "--image", str(ref), "--text", "is red",
                            "--phi", str(phi_path), "--json", "--top-k", "5", "--device", "cpu", "--keep-reference"])
    assert [Path(h["path"]).name for h in json.loads(r.stdout)] == want
    r = runner.invoke(app, ["search", str(tmp_path / "p.idx"), "--image", str(ref), "--text", "x",
                            "--phi", str(tmp_path / "nope.pt"), "--device", "cpu"])
    assert r.exit_code == 2 and "nope.pt" in r.output and "Traceback" not in r.output
    # Issue 15.8: a named preset (Pic2Word's "a photo of * , {}") in search too; --prompt with a preset is an error.
    r = runner.invoke(app, ["search", str(tmp_path / "p.idx"), "--image", str(ref), "--text", "is red",
                            "--phi", str(phi_path), "--json", "--top-k", "5", "--device", "cpu",
                            "--prompt-preset", "pic2word", "--keep-reference"])  # full ranking (#17.4)
    assert r.exit_code == 0, r.output
    got = [Path(h["path"]).name for h in json.loads(r.stdout[r.stdout.index("["):])]
    q = encode_composed(enc, [Image.open(ref).convert("RGB")], ["is red"], phi, prompt="a photo of $ , {}")
    assert got == [f"im{i}.png" for i in np.argsort(-(g @ q[0]), kind="stable")]
    r = runner.invoke(app, ["search", str(tmp_path / "p.idx"), "--image", str(ref), "--text", "x", "--phi",
                            str(phi_path), "--prompt", "{} $", "--prompt-preset", "rtd", "--device", "cpu"])
    assert r.exit_code == 2 and "--prompt-preset" in r.output and "Traceback" not in r.output



def test_calibrated_composed_search_cli_reranks_with_dcc_and_cve(tiny_model_dir, tmp_path):
    """`search --calib` on an index built with `--calib`: first stage on the plain composed query, re-rank
    with the DCC query against CVE gallery features (checked with calib.discriminative_scores)."""
    from typer.testing import CliRunner

    import calibclip
    from calibclip.calib import discriminative_scores
    from calibclip.cli import app

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, im in enumerate(images(6, seed=9)):
        im.save(folder / f"im{i}.png")
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(folder), "--model", str(tiny_model_dir), "--out", str(tmp_path / "c.idx"),
                            "--calib", "--dtype", "float32", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    cfg = CalibConfig()
    enc = calibclip.load(str(tiny_model_dir), device="cpu", calibration=cfg)
    torch.manual_seed(3)
    phi_path = save_phi(build_phi("lincir", enc.dim, enc.token_dim), tmp_path / "phi.pt")
    text = "is red and has a hat on the left"
    r = runner.invoke(app, ["search", str(tmp_path / "c.idx"), "--image", str(folder / "im0.png"), "--text", text,
                            "--phi", str(phi_path), "--calib", "--json", "--device", "cpu",
                            "--keep-reference"])  # the full ranking, reference included (#17.4)
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout[r.stdout.index("["):])
    gallery = [Image.open(folder / f"im{i}.png").convert("RGB") for i in range(6)]
    with torch.no_grad():
        g = {k: v.numpy() for k, v in image_feature_set(enc, enc.preprocess(gallery), cfg).items()}
    q = composed_feature_set(enc, gallery[:1], [text], calibclip.cir.load_phi(phi_path))
    scores, ids = discriminative_scores(q["plain"], q["dcc"], g["plain"], g["cve"], cfg, 6)
    assert [Path(h["path"]).name for h in hits] == [f"im{i}.png" for i in ids[0]]
    np.testing.assert_allclose([h["score"] for h in hits], scores[0], atol=1e-4)
