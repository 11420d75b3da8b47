"""`calibclip info / ls / rm / export`: look after an index without re-embedding."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from calibclip.cli import app
from calibclip.index import Index

runner = CliRunner()


def _ok(*args: str):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def built(tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(12):
        Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype("uint8")).save(
            photos / ("sub" if i >= 9 else "") / f"{i}.png")
    (photos / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "p.idx"
    _ok("index", str(photos), "--model", str(tiny_model_dir), "--out", str(out), "--num-workers", "0", "-q",
        "--index-type", "hnsw")
    return photos, out


def test_info_ls_and_export(built, tmp_path, tiny_model_dir):
    photos, out = built
    d = json.loads(_ok("info", str(out), "--json").stdout)
    assert d["items"] == 12 and d["skipped"] == 1 and d["model"] == str(tiny_model_dir)
    assert d["dtype"] == "float16" and d["dim"] == Index.open(out).embeddings().shape[1]
    assert d["calibration"] is None and d["feature_sets"] == ["plain"] and d["folder"] == str(photos.resolve())
    assert d["ann"]["kind"] == "hnsw" and 0 <= d["ann"]["recall10"] <= 1 and d["ann"]["stale"] is False
    assert d["size_bytes"] == sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    text = _ok("info", str(out)).stdout
    assert "hnsw" in text and "recall@10" in text and "12" in text and "last update" in text
    listed = _ok("ls", str(out)).stdout.splitlines()
    assert sorted(listed) == sorted(str(p.resolve()) for p in photos.rglob("*.png"))
    [skipped] = _ok("ls", str(out), "--skipped").stdout.splitlines()
    assert skipped.startswith(str((photos / "bad.jpg").resolve()) + "\t")
    _ok("export", str(out), "--format", "npy", "--out", str(tmp_path / "emb"))
    emb = np.load(tmp_path / "emb" / "img_emb" / "img_emb_0.npy")
    np.testing.assert_array_equal(emb, Index.open(out).embeddings())
    assert (tmp_path / "emb" / "img_emb" / "paths_0.txt").read_text().splitlines() == Index.open(out).paths
    pytest.importorskip("pyarrow")
    r = _ok("export", str(out), "--format", "parquet")
    import pandas as pd

    df = pd.read_parquet(tmp_path / "p.parquet")
    assert list(df["path"]) == Index.open(out).paths and "exported 12" in r.stdout


def test_parquet_export_names_the_extra_when_pyarrow_is_missing(built, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *a, **kw):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    r = runner.invoke(app, ["export", str(built[1]), "--format", "parquet"])
    assert r.exit_code == 2 and "calibclip[ray]" in r.output and "Traceback" not in r.output


def test_rm_forgets_images_keeps_files_and_the_ann_consistent(built, tiny_model_dir):
    photos, out = built
    one = photos / "3.png"
    r = _ok("rm", str(out), str(one), str(photos / "sub"), str(photos / "nope.png"))
    assert "removed 4 image(s)" in r.stdout and "search index rebuilt" in r.stdout and "nope.png" in r.output
    assert one.exists() and (photos / "sub" / "9.png").exists()  # files untouched
    index = Index.open(out)
    assert len(index) == 8 and str(one.resolve()) not in index.paths
    d = json.loads(_ok("info", str(out), "--json").stdout)
    assert d["items"] == 8 and d["ann"]["stale"] is False
    # a search uses the rebuilt ANN without a staleness warning and never returns a removed image
    s = _ok("search", str(out), "a red car", "--paths", "-k", "12")
    assert "warning" not in s.output and len(s.stdout.split()) == 8 and str(one.resolve()) not in s.stdout
    # re-indexing leaves the removed files out until they change
    r = _ok("index", str(photos), "--model", str(tiny_model_dir), "--out", str(out), "--num-workers", "0", "-q")
    assert "0 added" in r.stdout and len(Index.open(out)) == 8
    st = one.stat()
    os.utime(one, (st.st_atime, st.st_mtime + 10))
    r = _ok("index", str(photos), "--model", str(tiny_model_dir), "--out", str(out), "--num-workers", "0", "-q")
    assert "1 added" in r.stdout and len(Index.open(out)) == 9
    r = runner.invoke(app, ["rm", str(out), str(photos / "nope.png")])
    assert r.exit_code == 2 and "none of the given paths" in r.output
