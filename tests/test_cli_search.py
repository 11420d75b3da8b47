"""`calibclip search` as rclip users use it: a plain folder (cached index), output for pipes, exports, --like."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from calibclip.cli import app

runner = CliRunner()


def _images(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype("uint8")).save(folder / f"{i}.png")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("CALIBCLIP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "calibclip" / "indexes"


def _search(*args: str):
    r = runner.invoke(app, ["search", *args])
    assert r.exit_code == 0, r.output
    return r


def test_search_a_plain_folder_indexes_it_into_the_user_cache(tmp_path, tiny_model_dir, cache):
    photos = tmp_path / "photos"
    _images(photos, 4)
    m = ["--model", str(tiny_model_dir)]
    r = _search(str(photos), "a red car", *m, "--paths")
    assert "4 added" in r.stderr
    assert sorted(r.stdout.split()) == sorted(str(p.resolve()) for p in photos.glob("*.png"))
    [idx] = list(cache.glob("photos-*.idx"))
    assert (idx / "meta.sqlite").exists() and not list(tmp_path.glob("*.idx"))  # nothing beside the photos
    r = _search(str(photos), "a red car", *m, "--paths")
    assert "added" not in r.stderr and len(r.stdout.split()) == 4  # incremental: nothing new
    _images(photos, 1, start=4)
    assert len(_search(str(photos), "a red car", *m, "--paths", "--no-index").stdout.split()) == 4
    r = _search(str(photos), "a red car", *m, "--paths")
    assert "1 added" in r.stderr and len(r.stdout.split()) == 5
    assert list(cache.glob("photos-*.idx")) == [idx]  # same folder + model → same cache entry
    r = runner.invoke(app, ["search", str(tmp_path / "other"), "x", *m])
    assert r.exit_code == 2 and "no such index or folder" in r.output


def test_output_modes_scores_and_exports(tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    _images(photos / "a", 3)
    _images(photos / "b", 3)  # same file names, different folders
    out = tmp_path / "p.idx"
    r = runner.invoke(app, ["index", str(photos), "--model", str(tiny_model_dir), "--out", str(out),
                            "--num-workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    hits = json.loads(_search(str(out), "a red car", "--json", "-k", "6").stdout)
    lines = _search(str(out), "a red car", "-k", "6").stdout.splitlines()  # not a terminal: score<TAB>path
    assert lines == [f"{h['score']:.4f}\t{h['path']}" for h in hits]
    s = hits[2]["score"]
    kept = _search(str(out), "a red car", "-k", "6", "--min-score", str(s), "--paths").stdout.split()
    assert kept == [h["path"] for h in hits if h["score"] >= float(str(s))]
    assert len(_search(str(out), "a red car", "-k", "2", "--paths").stdout.split()) == 2
    r = _search(str(out), "a red car", "-k", "6", "--copy-to", str(tmp_path / "picked"), "--paths")
    names = sorted(p.name for p in (tmp_path / "picked").iterdir())
    assert names == ["0-1.png", "0.png", "1-1.png", "1.png", "2-1.png", "2.png"] and "copied 6" in r.stderr
    _search(str(out), "a red car", "-k", "2", "--link-to", str(tmp_path / "links"))
    links = list((tmp_path / "links").iterdir())
    assert len(links) == 2 and all(p.is_symlink() for p in links)
    from calibclip.index import Index

    want = [h.path for h in Index.open(out).search("a red car", k=6, cutoff="auto")]
    assert _search(str(out), "a red car", "-k", "6", "--cutoff", "auto", "--paths").stdout.split() == want
    r = runner.invoke(app, ["search", str(out), "x", "--cutoff", "much"])
    assert r.exit_code == 2 and "cutoff" in r.output


def test_like_leaves_the_reference_out(tmp_path, tiny_model_dir, phi_path):
    photos = tmp_path / "photos"
    _images(photos, 5)
    out = tmp_path / "p.idx"
    assert runner.invoke(app, ["index", str(photos), "--model", str(tiny_model_dir), "--out", str(out),
                               "--num-workers", "0", "-q"]).exit_code == 0
    ref = str((photos / "2.png").resolve())
    got = _search(str(out), "--like", ref, "--paths", "-k", "5").stdout.split()
    assert ref not in got and len(got) == 4
    got = _search(str(out), "--like", ref, "--paths", "-k", "5", "--keep-reference").stdout.split()
    assert got[0] == ref and len(got) == 5
    got = _search(str(out), "--image", ref, "--text", "is red", "--phi", str(phi_path), "--paths", "-k", "5")
    assert ref not in got.stdout.split() and len(got.stdout.split()) == 4
    got = _search(str(out), "--image", ref, "--text", "is red", "--phi", str(phi_path), "--paths", "-k", "5",
                  "--keep-reference")
    assert ref in got.stdout.split()


def test_table_on_a_terminal(tmp_path, tiny_model_dir, monkeypatch):
    from calibclip.cli import common

    photos = tmp_path / "photos"
    _images(photos, 2)
    out = tmp_path / "p.idx"
    runner.invoke(app, ["index", str(photos), "--model", str(tiny_model_dir), "--out", str(out), "--num-workers", "0"])
    monkeypatch.setattr(type(common.console), "is_terminal", property(lambda self: True))
    r = _search(str(out), "a [red] car")
    assert "rank" in r.stdout and "score" in r.stdout and '"a [red] car"' in r.stdout  # escaped, not markup
