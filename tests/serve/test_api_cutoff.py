"""`POST /search/text` with `cutoff`: the per-query relevance cut of Index.search, exposed over HTTP."""

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
