"""FAISS index kinds: recall against exact search, automatic choice, nprobe, persistence."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from calibclip.errors import UserError
from calibclip.index.ann import (AnnConfig, build_ann, choose_kind, clustered_vectors, default_m, default_nlist,
                                 exact_topk, factory_string, get_nprobe, index_kind, load_ann, parse_memory,
                                 recall_at_k, save_ann, set_nprobe)

faiss.omp_set_num_threads(1)
N, D, K = 4000, 64, 10
GiB = 1 << 30


@pytest.fixture(scope="module")
def data():
    x = clustered_vectors(N + 50, dim=D, intrinsic_dim=8, seed=3)
    base, queries = x[:N], x[N:]
    return base, queries, exact_topk(base, queries, K)


def _recall(index, data):
    base, queries, gt = data
    _, ids = index.search(queries, K)
    return recall_at_k(ids, gt, K)


def test_recall_at_k_by_hand():
    ann = np.array([[1, 2, 3], [4, 5, -1]])
    exact = np.array([[1, 2, 9], [4, 5, 6]])
    assert recall_at_k(ann, exact, k=3) == pytest.approx(2 / 3)
    assert recall_at_k(ann, exact, k=1) == 1.0
    assert recall_at_k(np.array([[-1, -1]]), np.array([[0, 1]]), k=2) == 0.0


def test_exact_topk_matches_argsort():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    expected = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(exact_topk(x, q, 7, chunk=64), expected)


@pytest.mark.parametrize("kind,floor", [("flat", 1.0), ("exact", 1.0), ("ivf-flat", 0.9), ("ivf-pq", 0.9),
                                        ("hnsw", 0.9)])
def test_each_kind_reaches_recall(data, kind, floor):
    index = build_ann(data[0], kind, nlist=32, m=16)
    assert index.ntotal == N
    set_nprobe(index, 8)
    assert _recall(index, data) >= floor


def test_pq_refine_is_what_lifts_recall(data):
    plain = build_ann(data[0], "ivf-pq", nlist=32, m=8, refine="none")
    refined = build_ann(data[0], "ivf-pq", nlist=32, m=8, refine="sq8")
    set_nprobe(plain, 8)
    set_nprobe(refined, 8)
    r_plain, r_refined = _recall(plain, data), _recall(refined, data)
    assert r_refined >= 0.9 and r_refined > r_plain + 0.1


def test_fast_scan_pq(data):
    index = build_ann(data[0], "ivf-pq", nlist=32, m=16, nbits=4, refine="sq8")
    set_nprobe(index, 8)
    assert _recall(index, data) >= 0.9


def test_nprobe_raises_recall_and_all_lists_is_exact(data):
    index = build_ann(data[0], "ivf-flat", nlist=64)
    set_nprobe(index, 1)
    low = _recall(index, data)
    set_nprobe(index, 10_000)  # clipped to nlist
    assert get_nprobe(index) == 64
    assert low < 0.95 and _recall(index, data) == 1.0


def test_hnsw_nprobe_is_ef_search(data):
    index = build_ann(data[0], "hnsw")
    set_nprobe(index, 5)
    assert faiss.downcast_index(index).hnsw.efSearch == 5 and get_nprobe(index) == 5
    with pytest.raises(UserError, match="--nprobe"):
        set_nprobe(index, 0)


def test_build_is_deterministic(data):
    a = build_ann(data[0], "ivf-pq", nlist=16, m=8, seed=1)
    b = build_ann(data[0], "ivf-pq", nlist=16, m=8, seed=1)
    q = data[1]
    np.testing.assert_array_equal(a.search(q, K)[1], b.search(q, K)[1])


def test_choose_kind_by_size_and_memory():
    assert choose_kind(10_000, 512, 1 * GiB) == "flat"
    assert choose_kind(1_000_000, 512, 4 * GiB) == "flat"             # 2 GiB of rows fit
    assert choose_kind(1_000_000, 512, 1 * GiB) == "ivf-pq"           # rows do not fit
    assert choose_kind(2_000_000, 512, 8 * GiB) == "ivf-flat"         # above the exact limit, rows fit
    assert choose_kind(2_000_000, 512, 2 * GiB) == "ivf-pq"
    assert choose_kind(50, 512, None) == "flat"
    with pytest.raises(UserError, match="--max-memory"):
        choose_kind(10_000_000, 512, 100 << 20)                      # 100 MiB < 720 MB of codes
    assert choose_kind(2_000, 512, 8 * GiB, AnnConfig(flat_max_n=1_000)) == "ivf-flat"


def test_auto_picks_refine_within_budget(data):
    rows = N * D * 4
    index = build_ann(data[0], "ivf-pq", nlist=16, m=8, max_memory=rows // 2)   # sq8 (N·D bytes) fits
    assert isinstance(faiss.downcast_index(index), faiss.IndexRefine)
    assert faiss.downcast_index(index).k_factor == AnnConfig().k_factor
    bare = build_ann(data[0], "ivf-pq", nlist=16, m=8, max_memory=N * 40)      # only the codes fit
    assert not isinstance(faiss.downcast_index(bare), faiss.IndexRefine)
    assert index_kind(index) == index_kind(bare) == "ivf-pq"


def test_sizing_defaults_and_factory_strings():
    assert default_nlist(1_000_000) == 1024 and default_nlist(100_000) == 256 and default_nlist(10_000) == 128
    assert default_nlist(50) == 1 and default_nlist(1000) == 25  # at most n/39
    assert default_m(512) == 64 and default_m(768) == 96 and default_m(100) == 10
    assert factory_string("ivf-pq", 10**6, 512, refine="sq8") == "IVF1024,PQ64np,Refine(SQ8)"
    assert factory_string("ivf-pq", 10**6, 512, m=32, nbits=4, refine="flat") == "IVF1024,PQ32x4fs,RFlat"
    assert factory_string("hnsw", 10, 512) == "HNSW32,Flat"
    with pytest.raises(UserError, match="--m 7"):
        factory_string("ivf-pq", 1000, 512, m=7)
    with pytest.raises(UserError, match="--index-type"):
        build_ann(np.zeros((10, 4), np.float32), "lsh")
    with pytest.raises(UserError, match="--nlist"):
        build_ann(np.zeros((10, 4), np.float32), "ivf-flat", nlist=50)


def test_parse_memory():
    assert parse_memory("24G") == 24 * GiB and parse_memory("512MiB") == 512 << 20
    assert parse_memory("1000") == 1000 and parse_memory(None) is None and parse_memory("1.5g") == int(1.5 * GiB)
    with pytest.raises(UserError, match="--max-memory"):
        parse_memory("lots")


@pytest.mark.parametrize("kind", ["flat", "ivf-pq", "hnsw"])
def test_save_load_round_trip(tmp_path, data, kind):
    index = build_ann(data[0], kind, nlist=16, m=8)
    set_nprobe(index, 6)
    path = tmp_path / "sub" / "ann.faiss"
    save_ann(index, path)
    assert [p.name for p in path.parent.iterdir()] == ["ann.faiss"]  # no temporary left behind
    loaded = load_ann(path)
    assert get_nprobe(loaded) == get_nprobe(index) and index_kind(loaded) == index_kind(index)
    s0, i0 = index.search(data[1], K)
    s1, i1 = loaded.search(data[1], K)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_allclose(s0, s1)
    with pytest.raises(UserError, match="no such ANN index"):
        load_ann(tmp_path / "missing.faiss")


# ---- the on-disk index: ann.faiss beside the shards ---------------------------------------------
def _store_with(tmp_path, vectors, batch=500):
    from calibclip.index.store import EmbeddingStore, FileStat

    store = EmbeddingStore(tmp_path / "v.idx", create=True)
    store.set_info(model="synthetic", dim=str(vectors.shape[1]), dtype="float32", calib="null")
    for s in range(0, len(vectors), batch):
        stats = [FileStat(f"/img/{i:05d}.png", 1, 0.0) for i in range(s, min(s + batch, len(vectors)))]
        store.add_batch(stats, ["0" * 40] * len(stats), {"plain": vectors[s:s + batch]}, dtype="float32")
    return store


def test_store_ann_build_reuse_search_and_exact(tmp_path, data):
    from calibclip.index import Index
    from calibclip.index.ann import ANN_FILE, build_store_ann

    store = _store_with(tmp_path, data[0])
    rep = build_store_ann(store, "ivf-flat", nlist=32)
    assert rep.kind == "ivf-flat" and rep.factory == "IVF32,Flat" and rep.n == N and rep.queries == 200
    assert 0.8 <= rep.recall10 <= 1.0 and (store.root / ANN_FILE).exists()
    again = build_store_ann(store, None)  # nothing changed, settings as recorded → kept
    assert again.reused and again.recall10 == rep.recall10
    index = Index.open(store.root)
    index.nprobe = 32  # all lists: the IVF-Flat index is exact again
    _, pos = index.search_vectors(data[1], K)
    np.testing.assert_array_equal(pos, data[2])
    assert index_kind(index._faiss) == "ivf-flat"
    index.nprobe = 1
    _, pos1 = index.search_vectors(data[1], K)
    assert recall_at_k(pos1, data[2]) < 1.0  # the approximate index really is what answers
    rep = build_store_ann(store, "exact")
    assert rep.kind == "flat" and not (store.root / ANN_FILE).exists()


def test_store_ann_stale_file_falls_back_to_exact(tmp_path, data):
    from calibclip.index import Index
    from calibclip.index.ann import build_store_ann

    store = _store_with(tmp_path, data[0])
    build_store_ann(store, "ivf-pq", nlist=16, m=8)
    store.remove(["/img/00000.png"])  # items changed without re-running `calibclip index`
    index = Index.open(store.root)
    index.nprobe = 1
    with pytest.warns(UserWarning, match="searching exactly"):
        _, pos = index.search_vectors(data[1], K)
    np.testing.assert_array_equal(pos, exact_topk(data[0][1:], data[1], K))
    rep = build_store_ann(store, None)  # rebuilt with the recorded settings
    assert rep.kind == "ivf-pq" and not rep.reused and rep.n == N - 1


def test_cli_index_type_and_nprobe(tmp_path, tiny_model_dir):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from calibclip.cli import app

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(80):
        Image.fromarray((np.random.RandomState(i).rand(16, 16, 3) * 255).astype("uint8")).save(folder / f"{i}.png")
    out = tmp_path / "p.idx"
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(folder), "--model", str(tiny_model_dir), "--out", str(out), "-q",
                            "--num-workers", "0", "--index-type", "ivf-flat", "--nlist", "4"])
    assert r.exit_code == 0, r.output
    assert "search index: ivf-flat (IVF4,Flat), recall@10" in r.output and (out / "ann.faiss").exists()
    exact = json.loads(runner.invoke(app, ["search", str(out), "a red car", "--json", "-k", "5"]).output)
    r = runner.invoke(app, ["search", str(out), "a red car", "--json", "-k", "5", "--nprobe", "4"])
    assert r.exit_code == 0, r.output
    assert [h["path"] for h in json.loads(r.output)] == [h["path"] for h in exact]  # 4 of 4 lists: exact
    import calibclip
    from calibclip.index import Index

    idx = Index.open(out)
    q = calibclip.load(str(tiny_model_dir), device="cpu").encode_texts(["a red car"])
    brute = [idx.paths[i] for i in exact_topk(idx.embeddings(), q, 5)[0]]
    assert [h["path"] for h in exact] == brute
    r = runner.invoke(app, ["index", str(folder), "--out", str(out), "-q", "--index-type", "ivf-pq", "--m", "7"])
    assert r.exit_code == 2 and "--m 7" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["index", str(folder), "--out", str(out), "-q", "--max-memory", "lots"])
    assert r.exit_code == 2 and "--max-memory" in r.output
