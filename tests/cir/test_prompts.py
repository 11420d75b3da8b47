"""Issue 15.8: named composed-query presets, Pic2Word's own protocol reproduced against its official logic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from calibclip.cir import build_phi, load_phi, save_phi
from calibclip.cir.compose import composed_texts, fashioniq_feature_set, pseudo_tokens, reference_embeds
from calibclip.cir.prompts import PRESETS, resolve_prompt
from calibclip.errors import UserError
from calibclip.tokenizer import clip_normalize


def test_presets_and_free_text():
    assert resolve_prompt().preset == "rtd" and resolve_prompt().prompt == "a photo of $ that {}"
    for name in ("rtd", "searle", "lincir"):
        p = resolve_prompt(preset=name)
        assert (p.prompt, p.fashioniq) == ("a photo of $ that {}", "both")
    p2w = resolve_prompt(preset="Pic2Word")
    assert (p2w.prompt, p2w.fashioniq) == ("a photo of $ , {}", "second-first")
    assert p2w.settings() == {"prompt": "a photo of $ , {}", "prompt_preset": "pic2word",
                              "prompt_as_published": "a photo of * , {}", "fashioniq_queries": "second-first"}
    free = resolve_prompt("{} with $")
    assert (free.preset, free.prompt, free.fashioniq) == (None, "{} with $", "both")
    with pytest.raises(UserError, match="--prompt-preset nope: unknown; use one of rtd, searle, lincir, pic2word"):
        resolve_prompt(preset="nope")
    with pytest.raises(UserError, match="give one of them"):
        resolve_prompt("{} $", "rtd")
    with pytest.raises(UserError, match="needs a '\\$'"):
        resolve_prompt("a photo of {}")
    assert all(p.template.count(p.placeholder) == 1 for p in PRESETS.values())


def official_pic2word(enc, phi, images, texts: list[str]) -> np.ndarray:
    """Pic2Word by hand: tokenize 'a photo of * , {}'.format(t) (clip.tokenize cleaning), find the FIRST '*'
    of ROW 0 and splice the image token at that column in every row (CLIP.encode_text_img_retrieval)."""
    star = enc.tokenizer.convert_tokens_to_ids("*</w>")
    raw = ["a photo of * , {}".format(t) for t in texts]
    enc_ = enc.tokenizer([clip_normalize(t) for t in raw], padding=True, return_tensors="pt")
    ids, mask = enc_["input_ids"], enc_["attention_mask"]
    col = int((ids[0] == star).nonzero()[0])
    spliced = ids.clone()
    spliced[:, col] = enc.placeholder_id  # this column's own embedding is replaced by the pseudo token
    with torch.inference_mode():
        s = pseudo_tokens(enc, phi, reference_embeds(enc, enc.preprocess(images)))
        out = enc.text_tower(spliced, mask, pseudo_tokens=s).embeds
    return torch.nn.functional.normalize(out.float(), dim=-1).numpy()


@pytest.fixture
def phi(tiny_encoder, tmp_path):
    torch.manual_seed(5)
    return load_phi(save_phi(build_phi("pic2word", tiny_encoder.dim, tiny_encoder.token_dim), tmp_path / "p.pt"))


def _images(n):
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_pic2word_cirr_query_equals_the_official_splice(tiny_encoder, phi):
    from calibclip.cir import encode_composed

    texts = ["is red", "Has two dogs &amp; a cat", "a * star and more words here"]
    p2w = resolve_prompt(preset="pic2word")
    assert [t.replace("$", "*") for t in composed_texts(texts, p2w.prompt)] == \
        ["a photo of * , {}".format(t) for t in texts]
    ours = encode_composed(tiny_encoder, _images(3), texts, phi, prompt=p2w.prompt)
    np.testing.assert_allclose(ours, official_pic2word(tiny_encoder, phi, _images(3), texts), atol=1e-5)
    # The RTD paper's protocol for the same φ is another query (what the preset changes, on this fixture).
    rtd = encode_composed(tiny_encoder, _images(3), texts, phi, prompt=resolve_prompt().prompt)
    assert np.abs(rtd - ours).max() > 1e-3


def test_pic2word_fashioniq_is_one_query_second_caption_first(tiny_encoder, phi):
    caps = [("is red with a collar.", "has short sleeves"), ("is longer", "is blue?")]
    got = fashioniq_feature_set(tiny_encoder, _images(2), caps, phi, resolve_prompt(preset="pic2word").prompt,
                                mode="second-first")["plain"]
    # Pic2Word FashionIQ.return_all: 'a photo of * , {} and {}'.format(cap2, cap1), captions as written.
    want = official_pic2word(tiny_encoder, phi, _images(2), [f"{c2} and {c1}" for c1, c2 in caps])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_eval_records_the_preset_and_keeps_rows_apart(tmp_path, tiny_model_dir, phi_path):
    from calibclip.cli import app

    names = ["d0", "d1", "d2"]
    for k, n in enumerate(names):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (60 * k, 0, 0)).save(tmp_path / "images" / f"{n}.png")
    for cat in ("dress", "shirt", "toptee"):
        for sub, obj in (("image_splits", names), ("captions", [{"candidate": "d0", "target": "d1",
                                                                 "captions": ["is red.", "has a dog?"]}])):
            f = tmp_path / sub / f"{'split' if sub == 'image_splits' else 'cap'}.{cat}.val.json"
            f.parent.mkdir(exist_ok=True)
            f.write_text(json.dumps(obj))
    base = ["eval", "fashioniq", "--root", str(tmp_path), "--model", str(tiny_model_dir), "--phi", str(phi_path),
            "--device", "cpu", "--no-cache", "-q", "--results-dir", str(tmp_path / "res")]
    r = CliRunner().invoke(app, [*base, "--prompt-preset", "pic2word"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 0, r.output
    files = {Path(p).name: json.loads(Path(p).read_text()) for p in (tmp_path / "res").glob("*.json")}
    p2w = next(v for k, v in files.items() if k.endswith("@pic2word.json"))
    default = next(v for k, v in files.items() if "@" not in k)
    assert p2w["settings"]["prompt_preset"] == "pic2word" and p2w["settings"]["fashioniq_queries"] == "second-first"
    assert p2w["settings"]["prompt_as_published"] == "a photo of * , {}"
    assert default["settings"]["prompt_preset"] == "rtd" and default["settings"]["fashioniq_queries"] == "both"
    r = CliRunner().invoke(app, [*base, "--prompt-preset", "clip"])
    assert r.exit_code == 2 and "unknown; use one of" in r.output and "Traceback" not in r.output
