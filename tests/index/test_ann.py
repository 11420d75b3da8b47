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
