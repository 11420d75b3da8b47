"""Index build, incremental add, resume after a crash, corrupt files, search ranking."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

from calibclip.errors import UserError
from calibclip.index import Index
from calibclip.index.store import EmbeddingStore
from calibclip.testing import write_random_images as _write_images


def _build(folder, enc, out, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("num_workers", 0)
    kw.setdefault("progress", False)
    return Index.build(folder, enc, out=out, **kw)


def test_build_and_search_matches_brute_force(tmp_path, tiny_encoder):
    _write_images(tmp_path / "photos", 10)
    index = _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx", dtype="float32")
    assert len(index) == 10 and index.last_summary.added == 10
    paths = sorted(index.paths)
    gallery = tiny_encoder.encode_images([Image.open(p).convert("RGB") for p in paths])
    q = tiny_encoder.encode_texts(["a red car"])[0]
    expected = [paths[i] for i in np.argsort(-(gallery @ q), kind="stable")[:5]]
    hits = index.search("a red car", k=5)
    assert [h.path for h in hits] == expected
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([h.score for h in hits], np.sort(gallery @ q)[::-1][:5], atol=1e-5)


def test_query_by_gallery_image_returns_itself(tmp_path, tiny_encoder):
    _write_images(tmp_path / "photos", 8)
    index = _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx")
    target = sorted(index.paths)[3]
    hits = index.search_image(Image.open(target).convert("RGB"), k=3)
    assert hits[0].path == target and hits[0].score == pytest.approx(1.0, abs=2e-3)  # float16 storage


def test_incremental_add_change_and_delete(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    _write_images(folder, 6)
    _build(folder, tiny_encoder, tmp_path / "p.idx")
    _write_images(folder, 3, start=6)
    (folder / "img000.png").unlink()
    time.sleep(0.01)
    Image.new("RGB", (30, 30), (0, 255, 0)).save(folder / "img001.png")
    os.utime(folder / "img001.png", (time.time() + 5, time.time() + 5))
    index = _build(folder, tiny_encoder, tmp_path / "p.idx")
    s = index.last_summary
    assert (s.added, s.unchanged, s.removed) == (4, 4, 1)
    assert len(index) == 8
    assert not any(p.endswith("img000.png") for p in index.paths)
    green = index.search_image(Image.new("RGB", (30, 30), (0, 255, 0)), k=1)[0]
    assert green.path.endswith("img001.png")


def test_resume_after_crash_loses_nothing(tmp_path, tiny_encoder, monkeypatch):
    folder = tmp_path / "photos"
    _write_images(folder, 12)
    calls = {"n": 0}
    original = EmbeddingStore.add_batch

    def crashing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third batch
        return original(self, *a, **kw)

    monkeypatch.setattr(EmbeddingStore, "add_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        _build(folder, tiny_encoder, tmp_path / "p.idx")
    monkeypatch.setattr(EmbeddingStore, "add_batch", original)
    assert len(EmbeddingStore(tmp_path / "p.idx").rows()) == 8  # two committed batches of 4
    index = _build(folder, tiny_encoder, tmp_path / "p.idx")
    assert (index.last_summary.added, index.last_summary.unchanged) == (4, 8)
    full = _build(folder, tiny_encoder, tmp_path / "fresh.idx")
    a = dict(zip(index.paths, index.embeddings()))
    b = dict(zip(full.paths, full.embeddings()))
    assert a.keys() == b.keys()
    for p in a:
        np.testing.assert_array_equal(a[p], b[p])


def test_orphan_shard_from_crash_is_ignored(tmp_path, tiny_encoder, monkeypatch):
    folder = tmp_path / "photos"
    _write_images(folder, 4)
    original = EmbeddingStore._tx

    def fail_tx(self):
        raise KeyboardInterrupt  # shard file written, metadata transaction never happens

    monkeypatch.setattr(EmbeddingStore, "_tx", fail_tx)
    with pytest.raises(KeyboardInterrupt):
        _build(folder, tiny_encoder, tmp_path / "p.idx")
    monkeypatch.setattr(EmbeddingStore, "_tx", original)
    index = _build(folder, tiny_encoder, tmp_path / "p.idx")
    assert len(index) == 4 and index.last_summary.added == 4


def test_corrupt_files_skipped_and_listed(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    _write_images(folder, 3)
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not a jpeg")
    good = (folder / "img000.png").read_bytes()
    (folder / "trunc.png").write_bytes(good[: len(good) // 2])
    index = _build(folder, tiny_encoder, tmp_path / "p.idx")
    failed = sorted(os.path.basename(p) for p, _ in index.last_summary.failed)
    assert failed == ["text.jpg", "trunc.png", "zero.png"]
    assert len(index) == 3
    # #16.3: every run retries the skipped files and lists those still skipped; a fixed one is indexed
    (folder / "zero.png").write_bytes(good)
    os.utime(folder / "zero.png", (0, 0))  # even when its size/mtime would not tell
    again = _build(folder, tiny_encoder, tmp_path / "p.idx")
    assert sorted(os.path.basename(p) for p, _ in again.last_summary.failed) == ["text.jpg", "trunc.png"]
    assert (again.last_summary.added, again.last_summary.unchanged, len(again)) == (1, 3, 4)
    third = _build(folder, tiny_encoder, tmp_path / "p.idx")
    assert len(third.last_summary.failed) == 2 and third.last_summary.added == 0


def test_model_mismatch_and_bad_paths(tmp_path, tiny_encoder):
    _write_images(tmp_path / "photos", 2)
    _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx")
    tiny_encoder_name, fingerprint = tiny_encoder.name, tiny_encoder.fingerprint
    try:  # another model: identity is the fingerprint of its files since #16.6 (a moved folder is the same model)
        tiny_encoder.name, tiny_encoder.fingerprint = "other-model", "sha1-sampled:other"
        with pytest.raises(UserError, match="--rebuild"):
            _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx")
    finally:
        tiny_encoder.name, tiny_encoder.fingerprint = tiny_encoder_name, fingerprint
    with pytest.raises(UserError, match="not a directory"):
        _build(tmp_path / "missing", tiny_encoder, tmp_path / "q.idx")
    with pytest.raises(UserError, match="no such index"):
        Index.open(tmp_path / "nothing.idx")
    index = Index.open(tmp_path / "p.idx", tiny_encoder)
    with pytest.raises(UserError, match="empty"):
        index.search("   ")


def test_calibrated_index_accepts_new_query_knobs_but_not_new_cve(tmp_path, tiny_encoder):
    from calibclip.calib import CalibConfig

    _write_images(tmp_path / "photos", 6)
    tiny_encoder.calibration = CalibConfig()
    try:
        index = _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx")
        base = index.search("a red car", k=3)
        # DCC / re-rank knobs act at query time only: the same stored features serve them.
        tiny_encoder.calibration = CalibConfig(dcc_k=1, lam=0.3)
        assert len(index.search("a red car", k=3)) == 3
        tiny_encoder.calibration = CalibConfig()
        assert [h.path for h in index.search("a red car", k=3)] == [h.path for h in base]
        # A CVE field changes the gallery features themselves: refuse and say how to fix it.
        tiny_encoder.calibration = CalibConfig(gamma=0.1)
        with pytest.raises(UserError, match="CVE settings.*--reencode"):
            index.search("a red car", k=3)
    finally:
        tiny_encoder.calibration = None


def test_writer_reserves_shards_by_an_index_readers_never_write(tmp_path):
    """The per-batch MAX(shard) reads an index (not every row); a writer adds it to an older index,
    a reader leaves that index's file untouched."""
    root = tmp_path / "idx"
    store = EmbeddingStore(root, create=True, writer=True)
    store.conn.execute("DROP INDEX items_shard")  # as an index written before it existed
    store.close()
    before = (root / "meta.sqlite").read_bytes()
    reader = EmbeddingStore(root)
    assert reader.conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND name='items_shard'"
                               ).fetchone() is None
    reader.close()
    assert (root / "meta.sqlite").read_bytes() == before
    writer = EmbeddingStore(root, writer=True)
    plan = " ".join(r[-1] for r in writer.conn.execute("EXPLAIN QUERY PLAN SELECT MAX(shard) FROM items"))
    assert "items_shard" in plan, plan
    assert writer.next_shard() == 0 and writer.next_shard() == 1
    writer.close()
