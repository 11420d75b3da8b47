"""`calibclip explain`: the PNG is written, its data are CalibCLIP's, bad input is one line."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from calibclip.calib import CalibConfig
from calibclip.cli import app
from calibclip.explain import explain, plot_explanation

runner = CliRunner()


def _image(path):
    Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype("uint8")).save(path)
    return path


def test_explain_data_and_png(tmp_path, tiny_encoder):
    img = Image.open(_image(tmp_path / "x.png"))
    ex = explain(tiny_encoder, img, "a red car, and a dog", CalibConfig(tau_d=0.5, tau_s=1.0, dcc_k=2))
    assert ex.attn_before.shape == ex.attn_after.shape == tiny_encoder.grid
    assert (ex.weights < 1).any() and (ex.attn_after[ex.weights == 0] == 0).all()
    assert ex.tokens == ["a", "red", "car", ",", "and", "a", "dog"]
    assert ex.is_word == [True, True, True, False, True, True, True] and sum(ex.masked) == 2
    out = plot_explanation(ex, tmp_path / "sub" / "e.png", "a red car, and a dog")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(out).size[0] > 800
    assert list((tmp_path / "sub").iterdir()) == [out]  # no temporary file left behind


def test_explain_cli(tmp_path, tiny_model_dir):
    img = _image(tmp_path / "x.png")
    out = tmp_path / "explain.png"
    r = runner.invoke(app, ["explain", str(img), "a woman with a black backpack", "--model", str(tiny_model_dir),
                            "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "masked words:" in r.output and out.read_bytes()[:4] == b"\x89PNG"
    r = runner.invoke(app, ["explain", str(tmp_path / "none.png"), "q", "--model", str(tiny_model_dir)])
    assert r.exit_code == 2 and "none.png" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["explain", str(img), "q", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x.jpg")])
    assert r.exit_code == 2 and ".png" in r.output
