"""Hostile or unlucky input to `calibclip serve`: one bad request never fails another one (#16.9–12)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from serve_helpers import make_client  # noqa: E402

from calibclip.index import Index  # noqa: E402
from calibclip.serve.batching import TextBatcher  # noqa: E402
from calibclip.serve.state import Searcher  # noqa: E402

BAD_BODY = b'{"query": "a\\ud800", "k": 3}'  # valid JSON, but a lone surrogate no tokenizer can take


def test_lone_surrogate_is_a_422_naming_the_field(client):
    resp = client.post("/search/text", content=BAD_BODY, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["code"] == "invalid_text" and "query" in body["error"] and "position 1" in body["error"]


def test_bad_query_among_concurrent_ones_fails_alone(client, shared_collection, tiny_encoder):
    """30 valid queries and 3 bad ones at once: every valid one gets its own ranking, the bad ones 422."""
    index = Index.open(shared_collection[1], tiny_encoder)
    words = ["a red car", "a dog", "two cats", "a boat", "a tree", "the sea"]
    expected = {q: [h.id for h in index.search(q, k=4)] for q in words}

    def ask(i: int):
        if i % 11 == 5:
            return None, client.post("/search/text", content=BAD_BODY, headers={"content-type": "application/json"})
        q = words[i % len(words)]
        return q, client.post("/search/text", json={"query": q, "k": 4})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(33)))
    bad = [r for q, r in answers if q is None]
    assert [r.status_code for r in bad] == [422] * 3
    for q, r in answers:
        if q is not None:
            assert r.status_code == 200, r.text
            assert [h["id"] for h in r.json()["hits"]] == expected[q]


def test_failing_query_inside_a_batch_is_retried_alone(shared_collection, tiny_encoder, monkeypatch):
    """A query that slips past validation and breaks its batch fails only its own caller."""
    calls: list[list[str]] = []
    gate = threading.Event()
    original = Index.search

    def gated(self, query, k=10):
        queries = [query] if isinstance(query, str) else list(query)
        calls.append(queries)
        if len(calls) == 1:
            gate.wait(20)  # hold the model so the others queue into one batch
        if "BOOM" in queries:
            raise RuntimeError("tokenizer exploded")
        return original(self, query, k=k)

    monkeypatch.setattr(Index, "search", gated)
    batcher = TextBatcher(Searcher(shared_collection[1], tiny_encoder))
    results: dict[str, object] = {}

    def ask(q: str) -> None:
        try:
            results[q] = batcher.search(q, 3)[1]
        except RuntimeError as exc:
            results[q] = exc

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    deadline = threading.Event()
    while not calls and not deadline.wait(0.005):
        pass
    others = [threading.Thread(target=ask, args=(q,)) for q in ("a red car", "BOOM", "a dog")]
    for t in others:
        t.start()
    while batcher.queue.qsize() < 3 and not deadline.wait(0.005):
        pass
    gate.set()
    for t in [first, *others]:
        t.join(timeout=30)
    batcher.close()

    assert isinstance(results["BOOM"], RuntimeError)
    direct = Index.open(shared_collection[1], tiny_encoder)
    for q in ("a red car", "a dog", "first"):
        assert [h.id for h in results[q]] == [h.id for h in original(direct, q, k=3)]
    # one batch of three failed, then each of the three alone
    assert sorted(len(c) for c in calls[1:]) == [1, 1, 1, 3]
