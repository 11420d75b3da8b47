"""Exact search over the in-memory rows: same top-k as a full stable sort, ties to the lower position."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import calibclip.index.exact as exact
from calibclip.index import Index
from calibclip.index.exact import exact_search


@pytest.mark.parametrize("levels", [None, 1])
@pytest.mark.parametrize("m", [1, 5])
def test_exact_search_equals_full_sort(levels, m, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    q = rng.normal(size=(m, 16)).astype(np.float32)
    if levels:
        x, q = np.round(x * levels), np.round(q * levels)  # integer entries: exact ties in the scores
    monkeypatch.setattr(exact, "BLOCK_FLOATS", 1000)  # several query blocks
    s = q @ x.T
    want = np.argsort(-s, axis=1, kind="stable")[:, :10]
    scores, pos = exact_search(x, q, 10)
    np.testing.assert_array_equal(pos, want)
    # blocks of another height may take another BLAS kernel: float32 sums of 16 products differ by ~16 ulp
    np.testing.assert_allclose(scores, np.take_along_axis(s, want, 1), rtol=2e-6, atol=1e-6)
    assert scores.dtype == np.float32 and pos.dtype == np.int64
    assert exact_search(x, q, 0)[1].shape == (m, 0) and exact_search(x[:3], q, 10)[1].shape == (m, 3)


def test_index_exact_search_keeps_one_copy_of_the_rows(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        Image.fromarray((np.random.RandomState(i).rand(20, 24, 3) * 255).astype("uint8")).save(folder / f"{i}.png")
    index = Index.build(folder, tiny_encoder, out=tmp_path / "p.idx", batch_size=4, num_workers=0, progress=False,
                        dtype="float32", index_type="exact")
    emb = index.embeddings()
    scores, pos = index.search_vectors(emb[:2], 3)
    want = np.argsort(-(emb[:2] @ emb.T), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(pos, want)
    np.testing.assert_array_equal(scores, np.take_along_axis(emb[:2] @ emb.T, want, 1))
    assert index._faiss is None  # no FAISS copy of the rows beside the matrix


def test_few_queries_on_many_rows_split_over_threads_give_identical_scores(monkeypatch):
    """The row-sliced product (one BLAS thread per slice) computes each score as the same dot product."""
    import calibclip.calib.rerank as rr
    import calibclip.cores as cores
    import calibclip.index.exact as ex

    rng = np.random.default_rng(3)
    rows = rng.standard_normal((5000, 64)).astype(np.float32)
    queries = rng.standard_normal((3, 64)).astype(np.float32)
    want_scores, want_pos = ex.exact_search(rows, queries, 7, spare_torch=True)  # below SPLIT_ROWS: one product
    monkeypatch.setattr(rr, "SPLIT_ROWS", 100)
    monkeypatch.setattr(rr, "pool_workers", lambda: 3)
    monkeypatch.setattr(cores, "pool_workers", lambda: 3)
    # the same dot products; a BLAS build may still sum a slice in another order, so allow the
    # float32 bound D·eps·Σ|q_i g_i| (the top 7 of random normal scores are far further apart)
    tol = 64 * np.finfo(np.float32).eps * float((np.abs(queries) @ np.abs(rows).T).max())
    assert np.allclose(rr.gallery_product(queries, rows), queries @ rows.T, rtol=0, atol=tol)
    scores, pos = ex.exact_search(rows, queries, 7, spare_torch=True)
    assert np.array_equal(pos, want_pos) and np.allclose(scores, want_scores, rtol=0, atol=tol)


def test_vector_search_and_text_search_modes_rank_alike():
    """``spare_torch`` (one BLAS thread per slice, as text search runs) changes threads, not the ranking."""
    import calibclip.index.exact as ex

    rng = np.random.default_rng(4)
    rows = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    for q in (queries[:1], queries):
        s1, p1 = ex.exact_search(rows, q, 9)
        s2, p2 = ex.exact_search(rows, q, 9, spare_torch=True)
        want = np.argsort(-(q @ rows.T), axis=1, kind="stable")[:, :9]
        np.testing.assert_array_equal(p1, want)
        np.testing.assert_array_equal(p2, want)
        tol = 32 * np.finfo(np.float32).eps * float((np.abs(q) @ np.abs(rows).T).max())  # D·eps·Σ|q_i g_i|
        np.testing.assert_allclose(s1, s2, rtol=0, atol=tol)
