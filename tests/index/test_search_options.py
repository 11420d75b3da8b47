"""Search options of the Index: per-query cutoff, query by an indexed image, excluded reference, exports."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from calibclip.errors import UserError
from calibclip.index import Index
from calibclip.index.cutoff import AUTO_Z, parse_cutoff, sample_positions, thresholds
from calibclip.index.export import export_embeddings, export_files


def _write_images(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        rng = np.random.RandomState(i)
        Image.fromarray((rng.rand(36, 44, 3) * 255).astype("uint8")).save(folder / f"img{i:03d}.png")


@pytest.fixture
def index(tmp_path, tiny_encoder):
    _write_images(tmp_path / "photos", 12)
    return Index.build(tmp_path / "photos", tiny_encoder, out=tmp_path / "p.idx", num_workers=0, progress=False,
                       dtype="float32")


def test_cutoff_rule_is_mean_plus_z_std():
    scores = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(thresholds(scores, 2.0), [1.5 + 2 * np.sqrt(1.25), 1.0], rtol=1e-12)
    assert parse_cutoff("auto") == AUTO_Z and parse_cutoff("2.5") == 2.5 and parse_cutoff(None) is None
    assert parse_cutoff("off") is None
    with pytest.raises(UserError, match="cutoff"):
        parse_cutoff("lots")
    assert list(sample_positions(5)) == [0, 1, 2, 3, 4]
    s = sample_positions(50_000, size=100)
    assert len(s) == 100 and len(set(s)) == 100 and np.all(np.diff(s) > 0)
    assert np.array_equal(s, sample_positions(50_000, size=100))  # seeded


def test_cutoff_keeps_exactly_the_hits_above_the_query_cut(index, tiny_encoder):
    q = tiny_encoder.encode_texts(["a red car"])[0]
    gallery = index.embeddings()
    scores = gallery @ q
    order = np.argsort(-scores, kind="stable")
    for z in (0.0, 1.0):
        cut = scores.mean() + z * scores.std()
        # no score sits within float32 rounding (1e-5 ≫ the error of a 16-term dot product) of the cut,
        # so the kept set is unambiguous
        assert np.min(np.abs(scores - cut)) > 1e-5
        hits = index.search("a red car", k=12, cutoff=z)
        assert [h.path for h in hits] == [index.paths[i] for i in order if scores[i] >= cut]
    assert len(index.search("a red car", k=12, cutoff=0.0)) < 12  # half-ish of a random gallery is below the mean
    assert len(index.search("a red car", k=12)) == 12


def test_like_excludes_the_reference_unless_kept(index, tmp_path):
    ref = sorted(index.paths)[4]
    hits = index.search_like(ref, k=3)
    assert ref not in [h.path for h in hits] and [h.rank for h in hits] == [1, 2, 3]
    kept = index.search_like(ref, k=3, keep_reference=True)
    assert kept[0].path == ref and kept[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.path for h in kept[1:]] == [h.path for h in hits[:2]]
    # the same picture under another name is recognised by its content and left out too
    copy = tmp_path / "copy.png"
    copy.write_bytes(open(ref, "rb").read())
    assert index.find(copy) == index.find(ref) is not None
    assert [h.path for h in index.search_like(copy, k=3)] == [h.path for h in hits]
    with pytest.raises(UserError, match="not in the index"):
        index.search_like(tmp_path / "missing.png")


def test_composed_search_leaves_the_reference_out(index, phi_path):
    from calibclip.cir import load_phi

    phi = load_phi(phi_path)
    ref = sorted(index.paths)[2]
    img = Image.open(ref).convert("RGB")
    full = index.search_composed(img, "is red", phi, k=12)
    assert ref in [h.path for h in full]
    without = index.search_composed(img, "is red", phi, k=11, exclude=(index.find(ref),))
    assert [h.path for h in without] == [h.path for h in full if h.path != ref]
    assert [h.rank for h in without] == list(range(1, 12))


def test_export_files_never_overwrites_a_different_file(tmp_path):
    a, b = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"
    for p, data in ((a, b"one"), (b, b"two")):
        p.parent.mkdir()
        p.write_bytes(data)
    out = tmp_path / "out"
    written = export_files([a, b], out)
    assert [p.name for p in written] == ["x.jpg", "x-1.jpg"]
    assert (out / "x.jpg").read_bytes() == b"one" and (out / "x-1.jpg").read_bytes() == b"two"
    assert export_files([b, a], out) == [out / "x-1.jpg", out / "x.jpg"]  # identical files reused, no x-2
    assert sorted(p.name for p in out.iterdir()) == ["x-1.jpg", "x.jpg"]
    links = export_files([a, b], tmp_path / "links", link=True)
    assert all(p.is_symlink() for p in links) and [p.resolve() for p in links] == [a, b]


def test_export_embeddings_npy_and_parquet(tmp_path):
    ids = np.array([3, 7])
    emb = np.arange(8, dtype=np.float32).reshape(2, 4)
    export_embeddings(ids, emb, ["/p/a.jpg", "/p/b.jpg"], tmp_path / "e", "npy")
    np.testing.assert_array_equal(np.load(tmp_path / "e" / "img_emb" / "img_emb_0.npy"), emb)
    assert (tmp_path / "e" / "img_emb" / "paths_0.txt").read_text().split() == ["/p/a.jpg", "/p/b.jpg"]
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    [f] = export_embeddings(ids, emb, ["/p/a.jpg", "/p/b.jpg"], tmp_path / "e.parquet", "parquet")
    df = pd.read_parquet(f)
    assert list(df["id"]) == [3, 7] and list(df["path"]) == ["/p/a.jpg", "/p/b.jpg"]
    np.testing.assert_array_equal(np.stack(df["embedding"].to_numpy()), emb)
