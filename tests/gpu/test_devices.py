"""Every method on every available device: features, calibration, composed queries, RTD and φ steps, index, eval.

Each test takes ``device`` (tests/conftest.py runs it on cpu and, ``cuda``-marked, on cuda when present),
so ``pytest -m cuda`` on a GPU machine (scripts/device_check.sh) exercises the paths only a GPU takes:
every tensor placed on the encoder's device, pinned loaders, autocast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import calibclip
from calibclip.calib import CalibConfig, image_feature_sets, text_feature_sets
from calibclip.errors import UserError

TEXTS = ["a red car on the left of a blue house", "a dog and a cat sitting on a wooden table"]


@pytest.fixture
def enc(tiny_model_dir, device):
    return calibclip.load(str(tiny_model_dir), device=device)


def _images(n: int) -> list[Image.Image]:
    return [Image.fromarray((np.random.RandomState(i).rand(40, 40, 3) * 255).astype("uint8")) for i in range(n)]


def test_feature_sets_on_device_equal_cpu(enc, tiny_encoder, device):
    cfg = CalibConfig()
    px = tiny_encoder.preprocess(_images(3))
    got = image_feature_sets(enc, px, cfg)
    ref = image_feature_sets(tiny_encoder, px, cfg)
    for k in ref:
        assert got[k].device.type == torch.device(device).type
        # fp32 on both; different kernels (cuBLAS vs CPU BLAS) differ by ~1e-6 on unit vectors
        torch.testing.assert_close(got[k].cpu(), ref[k], atol=1e-4, rtol=0)
    got_t, ref_t = text_feature_sets(enc, TEXTS, cfg), text_feature_sets(tiny_encoder, TEXTS, cfg)
    for k in ref_t:
        torch.testing.assert_close(got_t[k].cpu(), ref_t[k], atol=1e-4, rtol=0)


def test_composed_queries_on_device(enc, tiny_encoder, device):
    from calibclip.cir import build_phi, composed_feature_set

    torch.manual_seed(0)
    phi = build_phi("lincir", enc.dim, enc.token_dim).eval()
    enc.calibration = tiny_encoder.calibration = CalibConfig()
    try:
        got = composed_feature_set(enc, _images(2), ["is red", "has a hat"], phi.to(device))
        ref = composed_feature_set(tiny_encoder, _images(2), ["is red", "has a hat"], phi.cpu())
    finally:
        tiny_encoder.calibration = None
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-4)


def test_rtd_step_on_device(enc, device):
    from calibclip.cir.rtd import RTDConfig, make_trainable_tower, make_triplets
    from calibclip.cir.rtd.train import BatchOrder, make_optimizer, optimisation_step
    from calibclip.testing import _CORPUS

    triplets = make_triplets(_CORPUS, seed=0, per_caption=3)[0]
    torch.manual_seed(0)
    phi = torch.nn.Linear(enc.dim, enc.token_dim).to(device).eval()
    cfg = RTDConfig(batch_size=4, accum=2, lr=1e-3, seed=3)
    tower = make_trainable_tower(enc)
    assert next(tower.parameters()).device.type == torch.device(device).type
    opt = make_optimizer(tower, cfg)
    before = next(tower.parameters()).detach().clone()
    loss = optimisation_step(enc, tower, phi, triplets, BatchOrder(len(triplets), cfg.seed), cfg, 0, opt)
    assert np.isfinite(loss) and loss > 0
    assert not torch.equal(next(tower.parameters()).detach(), before)  # the optimiser moved the tower


def test_phi_step_on_device(enc, device):
    from calibclip.cir import build_phi
    from calibclip.cir.train_phi import lincir_loss, step_noise

    torch.manual_seed(0)
    phi = build_phi("lincir", enc.dim, enc.token_dim).to(device).train()
    u, eps = step_noise(0, 0, len(TEXTS), enc.dim)
    loss = lincir_loss(enc, phi, TEXTS, ["a $ car on the left of a blue house", "a $ and a cat"], u, eps, 1.0)
    loss.backward()
    assert loss.device.type == torch.device(device).type and torch.isfinite(loss)
    assert all(p.grad is not None for p in phi.parameters())


def test_index_and_eval_on_device(enc, tiny_encoder, device, tmp_path):
    from calibclip.eval.runner import EvalSpec, evaluate
    from calibclip.index import Index

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, im in enumerate(_images(5)):
        im.save(folder / f"{i}.png")
    idx = Index.build(folder, enc, out=tmp_path / "d.idx", batch_size=2, num_workers=0, progress=False,
                      dtype="float32")
    ref = Index.build(folder, tiny_encoder, out=tmp_path / "c.idx", batch_size=2, num_workers=0, progress=False,
                      dtype="float32")
    np.testing.assert_allclose(idx.embeddings(), ref.embeddings(), atol=1e-4)

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # the Flickr30K fixture writer of tests/eval
    from test_runner import write_flickr

    root = write_flickr(tmp_path / "flickr30k")
    spec = EvalSpec(dataset="flickr30k", root=root, model="tiny", batch_size=4, precision="fp32",
                    results_dir=None, progress=False, device=device)
    assert evaluate(spec, enc=enc).metrics == evaluate(spec, enc=tiny_encoder).metrics


def test_device_index_checked(monkeypatch):
    from calibclip.backends.loading import pick_device

    assert pick_device("cpu") == "cpu"
    with pytest.raises(UserError, match="not a device name"):
        pick_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\)"):
        pick_device("cuda:2")


def test_eval_precision_auto_per_device(enc, device, tmp_path):
    """auto = fp32 on CPU; on CUDA Flickr30K runs CLIP_benchmark's fp16 autocast, with the same recalls here."""
    import sys
    from pathlib import Path

    from calibclip.eval.runner import EvalSpec, evaluate

    sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))
    from test_runner import write_flickr

    root = write_flickr(tmp_path / "flickr30k")
    spec = dict(dataset="flickr30k", root=root, model="tiny", batch_size=4, results_dir=None, progress=False)
    auto = evaluate(EvalSpec(**spec), enc=enc)
    full = evaluate(EvalSpec(**spec, precision="fp32"), enc=enc)
    assert auto.settings["precision"] == ("fp16" if device == "cuda" else "fp32")
    # 6 images: R@10 is 100 at any precision; R@1 may move by a near tie at most (1 of 30 captions = 3.33)
    assert auto.metrics["t2i_R@10"] == full.metrics["t2i_R@10"] == 100.0
    assert abs(auto.metrics["t2i_R@1"] - full.metrics["t2i_R@1"]) <= 3.34
