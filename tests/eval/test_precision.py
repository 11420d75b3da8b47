"""`calibclip eval --precision`: official defaults per benchmark, recorded in the result JSON, weights restored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from calibclip.errors import UserError
from calibclip.eval.precision import OFFICIAL, precision_context, resolve_precision
from calibclip.eval.runner import EvalSpec, evaluate

from test_runner import write_flickr  # tests/eval is on sys.path (rootdir-less test folders)


def test_auto_is_fp32_on_cpu_and_the_official_precision_on_cuda():
    assert resolve_precision("auto", "cirr", "cpu") == "fp32"
    assert resolve_precision("auto", "mscoco", "cpu") == "fp32"
    assert resolve_precision("auto", "cirr", "cuda:0") == "fp16-weights"  # RTD/LinCIR validate.py
    assert resolve_precision("auto", "flickr30k", "cuda") == "fp16"  # CLIP_benchmark autocast
    assert resolve_precision("auto", "genecis", "cuda") == "fp32"
    assert resolve_precision("auto", "pairs", "cuda") == "fp32"  # no official protocol: full precision
    assert set(OFFICIAL.values()) <= {"fp32", "fp16", "bf16", "fp16-weights"}
    with pytest.raises(UserError, match="--precision fp16 needs a CUDA device"):
        resolve_precision("fp16", "cirr", "cpu")
    with pytest.raises(UserError, match="--precision fp8"):
        resolve_precision("fp8", "cirr", "cpu")


def test_fp16_weights_round_then_restore_exactly(tiny_encoder):
    params = [p.detach().clone() for p in tiny_encoder.model.parameters()]
    x = torch.randn(2, 3, 32, 32)
    with precision_context(tiny_encoder, "fp16-weights"):
        inside = [p.detach().clone() for p in tiny_encoder.model.parameters()]
        f16w = tiny_encoder.image_features(x)
    # inside: each weight is exactly its fp16 rounding (stored as fp32)
    assert all(torch.equal(a, b.half().float()) for a, b in zip(inside, params))
    assert any(not torch.equal(a, b) for a, b in zip(inside, params))
    # after: bit-identical original weights (a training loop sharing the encoder is untouched)
    assert all(torch.equal(a, b) for a, b in zip(tiny_encoder.model.parameters(), params))
    f32 = tiny_encoder.image_features(x)
    # fp16 weight rounding moves features by ~ relative 2^-11 per weight; well below 1e-2 on unit vectors
    assert f16w.dtype == torch.float32 and 0 < (f16w - f32).abs().max() < 1e-2


def test_bf16_autocast_on_cpu_changes_features_slightly(tiny_encoder):
    x = torch.randn(2, 3, 32, 32)
    with precision_context(tiny_encoder, "bf16"):
        fb = tiny_encoder.image_features(x).float()
    f32 = tiny_encoder.image_features(x)
    # bf16 keeps 8 mantissa bits (relative 2^-9 ≈ 2e-3 per op); a 2-layer tower stays within 5e-2
    assert 0 < (fb - f32).abs().max() < 5e-2


def test_precision_recorded_and_keyed_in_the_cache(tmp_path, tiny_encoder, tiny_model_dir):
    root = write_flickr(tmp_path / "flickr30k")
    base = dict(dataset="flickr30k", root=root, model=str(tiny_model_dir), batch_size=4,
                cache_dir=tmp_path / "cache", results_dir=tmp_path / "res", progress=False)
    r32 = evaluate(EvalSpec(**base), enc=tiny_encoder)
    rw = evaluate(EvalSpec(**base, precision="fp16-weights"), enc=tiny_encoder)
    assert r32.settings["precision"] == "fp32" and rw.settings["precision"] == "fp16-weights"
    assert rw.settings["gallery_cached"] is False  # its own cache entry, not the fp32 features
    assert len(list((tmp_path / "cache").glob("*.plain-plain.npy"))) == 2
    saved = json.loads(rw.path.read_text())
    assert saved["settings"]["precision"] == "fp16-weights"
    # only 6 images: every caption's image is in the top 10 at either precision
    assert abs(rw.metrics["t2i_R@10"] - r32.metrics["t2i_R@10"]) <= 1e-6


def test_cli_precision_option(tmp_path, tiny_model_dir):
    from calibclip.cli import app

    root = write_flickr(tmp_path / "flickr30k")
    args = ["eval", "flickr30k", "--root", str(root), "--model", str(tiny_model_dir), "--results-dir",
            str(tmp_path / "res"), "--no-cache", "-q", "--device", "cpu"]
    ok = CliRunner().invoke(app, args + ["--precision", "bf16"])
    assert ok.exit_code == 0, ok.output
    saved = json.loads(next((tmp_path / "res").glob("flickr30k-*-base.json")).read_text())
    assert saved["settings"]["precision"] == "bf16"
    bad = CliRunner().invoke(app, args + ["--precision", "fp16"])
    assert bad.exit_code == 2 and "needs a CUDA device" in bad.output and "Traceback" not in bad.output
