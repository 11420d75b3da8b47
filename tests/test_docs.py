"""The API reference builds from the docstrings and documents the public entry points (so it cannot rot)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("pdoc")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_docs.py"


@pytest.mark.slow  # pdoc imports and renders seven packages: ~8 s of CPU
def test_api_reference_builds_with_every_entry_point(tmp_path):
    spec = importlib.util.spec_from_file_location("build_docs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pages = mod.build(tmp_path / "api")  # raises SystemExit naming what is missing
    names = {p.relative_to(tmp_path / "api").as_posix() for p in pages}
    assert {"calibclip.html", "calibclip/cir.html", "calibclip/cir/rtd.html", "calibclip/index.html"} <= names
    top = (tmp_path / "api" / "calibclip.html").read_text(encoding="utf-8")
    assert "Load an encoder by HF id" in top  # the docstring of calibclip.load, rendered
