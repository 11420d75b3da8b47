"""The HF CLIP backend: shapes, normalisation, equality with transformers, loading errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import calibclip
from calibclip.errors import ModelNotAvailableError, UserError


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    return [Image.fromarray((rng.rand(40 + i, 50, 3) * 255).astype("uint8")) for i in range(n)]


def test_shapes_and_normalisation(tiny_encoder):
    img = tiny_encoder.encode_images(_images(3))
    txt = tiny_encoder.encode_texts(["a red car", "a man riding a bike"])
    assert img.shape == (3, tiny_encoder.dim) and img.dtype == np.float32
    assert txt.shape == (2, tiny_encoder.dim) and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)


def test_image_features_equal_transformers(tiny_encoder):
    images = _images(4, seed=1)
    ours = tiny_encoder.encode_images(images, batch_size=3)
    pixels = tiny_encoder.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = tiny_encoder.model.get_image_features(pixel_values=pixels).pooler_output
    np.testing.assert_allclose(ours, torch.nn.functional.normalize(ref, dim=-1).numpy(), atol=1e-5)


def test_text_features_equal_transformers(tiny_encoder):
    texts = ["a red car", "a woman with a black backpack and white shoes walking", "dog"]
    ours = tiny_encoder.encode_texts(texts)
    enc = tiny_encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = tiny_encoder.model.get_text_features(**enc).pooler_output
    np.testing.assert_allclose(ours, torch.nn.functional.normalize(ref, dim=-1).numpy(), atol=1e-5)


def test_batching_does_not_change_features(tiny_encoder):
    texts = ["a red car", "two people standing near a tree in the park at night", "a cat"]
    together = tiny_encoder.encode_texts(texts)
    alone = np.concatenate([tiny_encoder.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_last_block_attention_rows_sum_to_one(tiny_encoder):
    pixels = tiny_encoder.preprocess(_images(2))
    out = tiny_encoder.image_tower(pixels)
    attn = tiny_encoder.last_block_attention("vision", out.last_in)
    n_tokens = 1 + tiny_encoder.grid[0] * tiny_encoder.grid[1]
    assert attn.shape == (2, tiny_encoder.num_heads, n_tokens, n_tokens)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, tiny_encoder.num_heads, n_tokens))
    ids, mask = tiny_encoder.tokenize(["a red car", "a dog"])
    tout = tiny_encoder.text_tower(ids, mask)
    tattn = tiny_encoder.last_block_attention("text", tout.last_in, mask)
    assert torch.all(tattn[:, :, 0, 1:] == 0)  # causal: SOT attends to itself only


def test_key_mask_changes_only_masked_query(tiny_encoder):
    ids, mask = tiny_encoder.tokenize(["a red car on the left"])
    plain = tiny_encoder.text_tower(ids, mask).embeds
    key_mask = torch.zeros_like(ids, dtype=torch.bool)
    key_mask[0, 2] = True
    masked = tiny_encoder.text_tower(ids, mask, key_mask=key_mask).embeds
    assert not torch.allclose(plain, masked)
    # blocking a padding-free position equals deleting its key: check against attention_mask=0 there
    mask2 = mask.clone()
    mask2[0, 2] = 0
    torch.testing.assert_close(tiny_encoder.text_tower(ids, mask2).embeds, masked)


def test_over_long_text_is_truncated_keeping_eot(tiny_encoder):
    long = " ".join(["red car"] * 200)
    ids, _ = tiny_encoder.tokenize([long])
    assert ids.shape[1] == tiny_encoder.context_length
    assert ids[0, -1].item() == tiny_encoder.eot_id
    assert tiny_encoder.token_count(long) > tiny_encoder.context_length


def test_placeholder_is_dollar_259(tiny_encoder):
    assert tiny_encoder.placeholder_id == 259


def test_load_local_dir_round_trip(tiny_model_dir):
    a = calibclip.load(str(tiny_model_dir), device="cpu").encode_texts(["a red car"])
    b = calibclip.load(str(tiny_model_dir), device="cpu").encode_texts(["a red car"])
    np.testing.assert_array_equal(a, b)


def test_missing_model_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="--model"):
        calibclip.load("someorg/not-a-real-clip-model")


def test_bad_local_dir(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        calibclip.load(str(tmp_path))
    with pytest.raises(UserError, match="no such directory"):
        calibclip.load(str(tmp_path / "nope"))


def test_cuda_device_refused_without_gpu(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    with pytest.raises(UserError, match="--device cpu"):
        calibclip.load(str(tiny_model_dir), device="cuda")


def test_batch_preprocess_equals_the_image_processor_bit_for_bit(tiny_encoder, monkeypatch):
    """The batched rescale + normalisation gives exactly the processor's own pixel values (sizes,
    aspect ratios and a grey image), and a processor configured otherwise is called as it is."""
    rng = np.random.default_rng(7)
    sizes = [(37, 90), (64, 64), (120, 41), (33, 32), (32, 33), (31, 200), (401, 77), (95, 96), (96, 95)]
    sizes += [tuple(rng.integers(8, 300, 2)) for _ in range(40)]
    imgs = [Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")) for h, w in sizes]
    imgs.append(Image.fromarray((rng.random((50, 70)) * 255).astype("uint8")).convert("RGB"))
    want = tiny_encoder.processor(images=imgs, return_tensors="pt")["pixel_values"]
    got = tiny_encoder.preprocess(imgs)
    assert got.dtype == want.dtype and torch.equal(got, want)
    grey = [im.convert("L") for im in imgs[:3]]  # not RGB: through the processor
    assert torch.equal(tiny_encoder.preprocess(grey), tiny_encoder.processor(images=grey, return_tensors="pt")["pixel_values"])
    from calibclip.backends.hf_clip import _crop_plan
    assert _crop_plan(tiny_encoder.processor) is not None  # the direct path was the one tested above
    monkeypatch.setattr(tiny_encoder.processor, "do_normalize", False)
    want = tiny_encoder.processor(images=imgs, return_tensors="pt")["pixel_values"]
    assert torch.equal(tiny_encoder.preprocess(imgs), want)
