"""`POST /search/text` with `cutoff` (per-query relevance cut), and composed search by id without the reference."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from calibclip.index import Index  # noqa: E402


def test_cutoff_returns_what_index_search_keeps(client, shared_collection, tiny_encoder):
    index = Index.open(shared_collection[1], tiny_encoder)
    for cutoff in ("0", "1"):
        want = index.search("a red car", k=24, cutoff=cutoff)
        body = client.post("/search/text", json={"query": "a red car", "k": 24, "cutoff": cutoff}).json()
        assert [h["id"] for h in body["hits"]] == [h.id for h in want] and body["cutoff"] == cutoff
    assert len(index.search("a red car", k=24, cutoff="0")) < len(index.search("a red car", k=24))
    r = client.post("/search/text", json={"query": "a red car", "cutoff": "lots"})
    assert r.status_code == 400 and "cutoff" in r.json()["error"]


def test_composed_by_id_leaves_the_reference_out(shared_collection, tiny_encoder, phi_path):
    from serve_helpers import make_client

    from calibclip.cir import load_phi

    c = make_client(shared_collection[1], tiny_encoder, phi=load_phi(phi_path))
    ids, _, _ = Index.open(shared_collection[1]).matrix()
    ref = int(ids[2])
    n = len(ids)
    got = c.post("/search/composed", data={"text": "is red", "k": str(n), "id": str(ref)}).json()["hits"]
    assert ref not in [h["id"] for h in got] and len(got) == n - 1
    kept = c.post("/search/composed", data={"text": "is red", "k": str(n), "id": str(ref),
                                            "keep_reference": "true"}).json()["hits"]
    assert ref in [h["id"] for h in kept] and [h["id"] for h in kept if h["id"] != ref] == [h["id"] for h in got]
