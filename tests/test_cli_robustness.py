"""The CLI under a moved / swapped / default model and damaged input (issue #16.6-8): one line, exit 2."""

from __future__ import annotations

import errno
import shutil
import sqlite3

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from calibclip.cli import app

runner = CliRunner()


def _photos(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype("uint8")).save(folder / f"{i}.png")
    return folder


def _index(folder, out, *extra):
    r = runner.invoke(app, ["index", str(folder), "--out", str(out), "--num-workers", "0", "-q", *extra])
    assert r.exit_code == 0, r.output
    return r


def _one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _info(idx):
    con = sqlite3.connect(idx / "meta.sqlite")
    try:
        return dict(con.execute("SELECT key, value FROM info"))
    finally:
        con.close()


def test_model_is_recorded_resolved_with_a_fingerprint(tmp_path, tiny_model_dir, monkeypatch):
    from calibclip.testing import tiny_clip

    shutil.copytree(tiny_model_dir, tmp_path / "m")
    _photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    _index("photos", "p.idx", "--model", "m")  # typed relative
    info = _info(tmp_path / "p.idx")
    assert info["model"] == str((tmp_path / "m").resolve()) and info["model_fingerprint"].startswith("sha1-")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # "./m" means nothing here: the stored path still works
    r = runner.invoke(app, ["search", "../p.idx", "a red car", "--json"])
    assert r.exit_code == 0, r.output
    # the model moved: one line saying so, and --model points at the new place (same fingerprint)
    (tmp_path / "m").rename(tmp_path / "moved")
    _one_line_error(runner.invoke(app, ["search", "../p.idx", "a red car"]), "does not exist", "--model")
    r = runner.invoke(app, ["search", "../p.idx", "a red car", "--model", "../moved", "--json"])
    assert r.exit_code == 0, r.output
    # another model of the same shapes (another seed) at the recorded path is refused, not used silently
    tiny_clip(tmp_path / "m", seed=1)
    _one_line_error(runner.invoke(app, ["search", "../p.idx", "a red car"]), "not the model")
    _one_line_error(runner.invoke(app, ["search", "../p.idx", "a red car", "--model", "../m"]), "not the model")
    # another dimension
    tiny_clip(tmp_path / "wide", seed=0, projection_dim=24)
    _one_line_error(runner.invoke(app, ["search", "../p.idx", "x", "--model", "../wide"]), "24 dimensions", "16")


def test_old_index_without_fingerprint_keeps_working(tmp_path, tiny_model_dir, monkeypatch):
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    _photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    _index("photos", "p.idx", "--model", "m")
    con = sqlite3.connect(tmp_path / "p.idx" / "meta.sqlite")
    with con:  # as written before #16.6: the model as typed, no fingerprint
        con.execute("UPDATE info SET value='m' WHERE key='model'")
        con.execute("DELETE FROM info WHERE key='model_fingerprint'")
    con.close()
    r = runner.invoke(app, ["search", "p.idx", "a red car", "--json"])
    assert r.exit_code == 0, r.output
    r = _index("photos", "p.idx")  # an update run keeps accepting it
    assert "6 unchanged" in r.output


def test_shipped_model_is_announced_on_every_run(tmp_path):
    _photos(tmp_path / "photos", 3)
    r = _index(tmp_path / "photos", tmp_path / "p.idx")  # no --model
    assert "shipped synthetic demo model" in r.output and "--model" in r.output
    r = runner.invoke(app, ["search", str(tmp_path / "p.idx"), "a cat"])
    assert r.exit_code == 0 and "shipped synthetic demo model" in r.output

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from calibclip.backends.loading import load
    from calibclip.data.synth import shipped_model_dir
    from calibclip.serve import create_app

    with TestClient(create_app(tmp_path / "p.idx", encoder=load(str(shipped_model_dir()), device="cpu")),
                    base_url="http://127.0.0.1") as c:  # the Host check answers only the bound names
        assert "synthetic demo model" in c.get("/stats").json()["model_warning"]
        assert c.get("/").status_code == 200 and 'id="model-warning"' in c.get("/").text


def test_real_model_is_not_announced(tmp_path, tiny_model_dir):
    _photos(tmp_path / "photos", 3)
    r = _index(tmp_path / "photos", tmp_path / "p.idx", "--model", str(tiny_model_dir))
    assert "synthetic" not in r.output


@pytest.fixture
def built(tmp_path, tiny_model_dir):
    _photos(tmp_path / "photos", 30)
    _index(tmp_path / "photos", tmp_path / "p.idx", "--model", str(tiny_model_dir))
    return tmp_path / "photos", tmp_path / "p.idx"


def test_damaged_index_files_are_one_line_errors(built, tiny_model_dir, tmp_path):
    folder, idx = built
    search = ["search", str(idx), "a cat"]
    shard = sorted((idx / "shards").glob("*.npy"))[0]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 3])
    _one_line_error(runner.invoke(app, search), str(shard), "--rebuild")
    shard.write_bytes(np.random.default_rng(0).bytes(len(good)))
    _one_line_error(runner.invoke(app, search), "damaged", "--rebuild")
    shard.write_bytes(good)
    # a damaged approximate index: one line, and `calibclip index` rebuilds it
    _index(folder, idx, "--index-type", "hnsw")
    (idx / "ann.faiss").write_bytes(b"\x00garbage" * 100)
    _one_line_error(runner.invoke(app, search), "ann.faiss", "calibclip index")
    _index(folder, idx)
    assert runner.invoke(app, search).exit_code == 0
    # garbage meta.sqlite: one line; --rebuild starts afresh
    for f in idx.glob("meta.sqlite*"):
        f.unlink()
    (idx / "meta.sqlite").write_bytes(b"not a database" * 500)
    _one_line_error(runner.invoke(app, search), "meta.sqlite", "--rebuild")
    r = _index(folder, idx, "--model", str(tiny_model_dir), "--rebuild")
    assert "30 added" in r.output


def test_bad_options_are_one_line_errors(built, tmp_path):
    folder, idx = built
    (tmp_path / "phi.txt").write_text("hello, not a checkpoint\n")
    _one_line_error(runner.invoke(app, ["search", str(idx), "--image", str(folder / "1.png"), "--text", "is red",
                                        "--phi", str(tmp_path / "phi.txt")]), "phi.txt")
    _one_line_error(runner.invoke(app, ["index", str(folder), "--out", str(idx), "--index-type", "ivf-pq", "-q",
                                        "--num-workers", "0"]), "ivf-pq", "256", "exact")
    _index(folder, idx, "--index-type", "hnsw")
    for nprobe in ("2147483648", "300000000"):  # overflowed FAISS's int / allocated 2.7 GB: clipped to n
        r = runner.invoke(app, ["search", str(idx), "a cat", "--nprobe", nprobe, "--json", "-k", "3"])
        assert r.exit_code == 0, r.output


def test_disk_full_is_one_line(built, monkeypatch):
    folder, idx = built
    from calibclip.index.store import EmbeddingStore

    def full(self, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(idx / "shards" / ".tmp-x.npy"))

    monkeypatch.setattr(EmbeddingStore, "add_batch", full)
    _photos(folder / "more", 2)
    _one_line_error(runner.invoke(app, ["index", str(folder), "--out", str(idx), "-q", "--num-workers", "0"]),
                    "no space left", "run the same command again")

    def sqlite_full(self, *a, **kw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(EmbeddingStore, "add_batch", sqlite_full)
    _one_line_error(runner.invoke(app, ["index", str(folder), "--out", str(idx), "-q", "--num-workers", "0"]),
                    "no space left")
