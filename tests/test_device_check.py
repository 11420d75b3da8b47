"""scripts/device_check.sh's CPU mode (--device cpu --small) runs end to end, so the GPU check cannot rot."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_configs_are_the_openai_ones():
    c = _module().CONFIGS
    b16, l14 = c["openai/clip-vit-base-patch16"], c["openai/clip-vit-large-patch14"]
    assert (b16["projection_dim"], b16["vision_config"]["patch_size"], b16["vision_config"]["hidden_size"]) == (512, 16, 768)
    assert (l14["projection_dim"], l14["vision_config"]["num_hidden_layers"], l14["text_config"]["hidden_size"]) == \
        (768, 24, 768)
    assert b16["text_config"]["vocab_size"] == l14["text_config"]["vocab_size"] == 49408


def test_small_cpu_mode_writes_every_figure(tmp_path):
    mod = _module()
    assert mod.main(["--device", "cpu", "--small", "--out", str(tmp_path), "--repeats", "1"]) == 0
    rep = json.loads((tmp_path / "device_check.json").read_text())
    assert rep["failed"] == {} and rep["mode"] == "small"
    small = rep["models"]["small"]
    for part in ("indexing", "text", "phi"):
        assert small[part]["ratio"] > 0
    assert small["indexing"]["images"] == mod.SMALL.index_images
    assert small["calib"]["image_overhead"] > 0 and small["calib"]["text_overhead"] > 0
    assert math.isfinite(small["rtd"]["off"]["loss"]) and small["rtd"]["ratio_fp32"] > 0
    assert small["rtd"]["fp16"] == {"skipped": "autocast training is CUDA-only"}  # named, not silently missing
    assert rep["eval"]["captions"] == mod.SMALL.captions and 0 <= rep["eval"]["calib_R@1"] <= 100
    assert "ratio" in rep["ann"] or "skipped" in rep["ann"]
    assert rep["skipped"]["cuda tests"] == "not on a CUDA device"
    md = (tmp_path / "device_check.md").read_text()
    assert "| model | figure | value | ratio | target |" in md and "RTD step b4 fp32" in md
