"""CalibCLIP features on the tiny CLIP: identity when off, step 4 against HF's own layer, invariances."""

from __future__ import annotations

import pytest
import torch

from calibclip.calib import image_feature_sets, text_feature_sets
from calibclip.calib import (
    CalibConfig,
    cve_analysis,
    dcc_analysis,
    image_feature_set,
    recompute_cls,
    text_feature_set,
)

OFF = CalibConfig(cve=False, dcc=False, disc_sim=False)
LOW = CalibConfig(tau_d=0.5, tau_s=1.0)  # low thresholds so the random tiny model has tokens to treat
TEXTS = ["a woman with a black backpack, and white shoes", "red car", "a dog and a cat sitting on a wooden table",
         "the person wears a hat"]


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_all_off_is_plain_bit_for_bit(tiny_encoder, pixels):
    with torch.inference_mode():
        base = tiny_encoder.image_features(pixels)
        feats = image_feature_set(tiny_encoder, pixels, OFF)
        assert torch.equal(feats["plain"], base) and torch.equal(feats["cve"], base)
        texts = text_feature_set(tiny_encoder, TEXTS, OFF)
        base_t = tiny_encoder.text_features(TEXTS)
        assert torch.equal(texts["plain"], base_t) and torch.equal(texts["dcc"], base_t)


def test_weights_all_one_or_nothing_masked_is_plain_bit_for_bit(tiny_encoder, pixels):
    with torch.inference_mode():
        feats = image_feature_set(tiny_encoder, pixels, CalibConfig(tau_d=1e9, tau_s=1e9))
        assert torch.equal(feats["cve"], tiny_encoder.image_features(pixels))
        texts = text_feature_set(tiny_encoder, TEXTS, CalibConfig(dcc_k=0))
        assert torch.equal(texts["dcc"], tiny_encoder.text_features(TEXTS))


def test_encoder_hooks_use_the_calibration(tiny_encoder, pixels):
    try:
        tiny_encoder.calibration = LOW
        feats = image_feature_sets(tiny_encoder, pixels, tiny_encoder.calibration)
        texts = text_feature_sets(tiny_encoder, TEXTS, tiny_encoder.calibration)
    finally:
        tiny_encoder.calibration = None
    assert set(feats) == {"plain", "cve"} and set(texts) == {"plain", "dcc"}
    assert not torch.allclose(feats["cve"], feats["plain"])  # something was suppressed
    assert not torch.allclose(texts["dcc"], texts["plain"])
    assert torch.allclose(feats["cve"].norm(dim=1), torch.ones(6)) and torch.allclose(texts["dcc"].norm(dim=1),
                                                                                       torch.ones(4))


@torch.inference_mode()
def test_cls_recompute_equals_hf_layer_with_log_weight_bias(tiny_encoder, pixels):
    """Step 4 independently: softmax(scores + log w) = A·w / Σ A·w, so HF's own layer with that additive
    bias on the [CLS] row must give the same [CLS] output as our re-weighted recomputation."""
    enc = tiny_encoder
    res = cve_analysis(enc, pixels, LOW)
    assert (res.w < 1).any()
    out = enc.image_tower(pixels)
    layer = enc.model.vision_model.encoder.layers[-1]
    attn = enc.last_block_attention("vision", out.last_in)
    w_full = torch.cat([torch.ones(6, 1), res.w], dim=1)
    bias = torch.zeros(6, 1, 17, 17)
    bias[:, 0, 0, :] = torch.log(w_full).clamp(min=torch.finfo(torch.float32).min)
    hf = layer(out.last_in, bias)[:, 0]
    from calibclip.calib import reweight_cls_attention

    ours = recompute_cls(layer, out.last_in, reweight_cls_attention(attn[:, :, 0, :], res.w))
    assert torch.allclose(ours, hf, atol=1e-5)
    # and with all weights 1 the recomputation is the plain tower
    plain = recompute_cls(layer, out.last_in, attn[:, :, 0, :])
    assert torch.allclose(enc.model.visual_projection(enc.model.vision_model.post_layernorm(plain)), out.embeds,
                          atol=1e-5)
    # suppressed tokens get no attention after CVE; the head-averaged map still sums to 1 with [CLS]
    assert (res.a_after[res.w == 0] == 0).all()


@torch.inference_mode()
def test_image_batch_order_and_size_invariance(tiny_encoder, pixels):
    full = image_feature_set(tiny_encoder, pixels, LOW)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = image_feature_set(tiny_encoder, pixels[perm], LOW)
    singles = [image_feature_set(tiny_encoder, pixels[i:i + 1], LOW) for i in range(6)]
    for key in ("plain", "cve"):
        assert torch.allclose(shuffled[key], full[key][perm], atol=1e-5)
        assert torch.allclose(torch.cat([s[key] for s in singles]), full[key], atol=1e-5)


@torch.inference_mode()
@pytest.mark.parametrize("mode", ["keys", "delete", "pad-token"])
def test_text_batch_order_and_size_invariance(tiny_encoder, mode):
    cfg = CalibConfig(dcc_mask=mode)
    full = text_feature_set(tiny_encoder, TEXTS, cfg)
    rev = text_feature_set(tiny_encoder, TEXTS[::-1], cfg)
    singles = [text_feature_set(tiny_encoder, [t], cfg) for t in TEXTS]
    chunked = text_feature_set(tiny_encoder, TEXTS, cfg, batch_size=3)
    for key in ("plain", "dcc"):
        assert torch.allclose(rev[key], full[key].flip(0), atol=1e-5)
        assert torch.allclose(torch.cat([s[key] for s in singles]), full[key], atol=1e-5)
        assert torch.allclose(chunked[key], full[key], atol=1e-5)


@torch.inference_mode()
def test_dcc_masks_top_words_and_never_punctuation_or_placeholder(tiny_encoder):
    enc = tiny_encoder
    res = dcc_analysis(enc, ["a $ , red car!"], CalibConfig(dcc_k=10, dcc_min_keep=0))
    toks = enc.tokenizer.convert_ids_to_tokens(res.input_ids[0])
    words = [t for t, w in zip(toks, res.words[0]) if w]
    assert words == ["a</w>", "red</w>", "car</w>"]  # not SOT/EOT, ',', '!', nor the '$' placeholder
    assert res.general[0].tolist() == res.words[0].tolist()  # k ≥ #words, min_keep 0: all words
    res = dcc_analysis(enc, [TEXTS[0]], CalibConfig())
    g = res.general[0]
    assert int(g.sum()) == 3
    # the three masked are the three largest e_j among the words
    e_words = res.e[0][res.words[0]]
    assert torch.equal(res.e[0][g].sort().values, e_words.sort().values[-3:])


@torch.inference_mode()
def test_dcc_modes_match_their_definitions(tiny_encoder):
    enc = tiny_encoder
    text = [TEXTS[0]]
    res = dcc_analysis(enc, text, CalibConfig(dcc_mask="delete"))
    keep = ~res.general[0]
    ids = res.input_ids[:, keep]  # the same query with the general words removed
    want = enc.text_tower(ids, torch.ones_like(ids)).embeds
    assert torch.allclose(res.dcc, torch.nn.functional.normalize(want, dim=-1), atol=1e-5)
    # keys: a blocked key is never seen, so whatever token sits there does not change t̃
    res = dcc_analysis(enc, text, CalibConfig(dcc_mask="keys"))
    ids, mask = enc.tokenize(text)
    other = ids.masked_fill(res.general, int(ids[0, 1]))
    again = enc.text_tower(other, mask, key_mask=res.general).embeds
    assert torch.allclose(res.dcc, torch.nn.functional.normalize(again, dim=-1), atol=1e-5)
    assert not torch.allclose(res.dcc, res.plain, atol=1e-3)


@torch.inference_mode()
def test_composed_query_pseudo_token_flows_through_both_passes(tiny_encoder):
    enc = tiny_encoder
    texts = ["a photo of $ that is red and has a hat"] * 2
    pseudo = torch.randn(2, enc.token_dim, generator=torch.Generator().manual_seed(1))
    feats = text_feature_set(enc, texts, CalibConfig(), pseudo_tokens=pseudo)
    assert not torch.allclose(feats["plain"][0], feats["plain"][1])  # the pseudo token is used
    assert not torch.allclose(feats["dcc"][0], feats["dcc"][1])
    res = dcc_analysis(enc, texts[:1], CalibConfig(dcc_k=50, dcc_min_keep=0), pseudo_tokens=pseudo[:1])
    slot = res.input_ids[0] == enc.placeholder_id
    assert slot.any() and not (res.general[0] & slot).any()
    single = text_feature_set(enc, texts[1:], CalibConfig(), pseudo_tokens=pseudo[1:])
    assert torch.allclose(single["dcc"][0], feats["dcc"][1], atol=1e-5)
