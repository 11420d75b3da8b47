"""Text queries that queue up while the model is busy are answered by one batched search."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from calibclip.errors import UserError
from calibclip.index import Index
from calibclip.serve.batching import TextBatcher
from calibclip.serve.state import Searcher


def _wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_queued_queries_share_one_search_and_each_gets_its_own_top_k(shared_collection, tiny_encoder, monkeypatch):
    index_path = shared_collection[1]
    asks = {"a red car": 3, "a dog": 5, "two cats asleep on a long red sofa by the window": 2, "a boat": 8}
    direct = Index.open(index_path, tiny_encoder)
    expected = {q: direct.search(q, k=k) for q, k in asks.items()}

    calls: list[list[str]] = []
    gate = threading.Event()
    original = Index.search

    def gated(self, query, k=10):
        calls.append([query] if isinstance(query, str) else list(query))
        if len(calls) == 1:
            gate.wait(20)  # hold the model busy so the other queries queue up
        return original(self, query, k=k)

    monkeypatch.setattr(Index, "search", gated)
    batcher = TextBatcher(Searcher(index_path, tiny_encoder))
    results: dict[str, tuple] = {}

    def ask(q: str, k: int) -> None:
        results[q] = batcher.search(q, k)

    first = threading.Thread(target=ask, args=("a blue sky", 4))
    first.start()
    _wait(lambda: len(calls) == 1)
    others = [threading.Thread(target=ask, args=item) for item in asks.items()]
    for t in others:
        t.start()
    _wait(lambda: batcher.queue.qsize() == len(asks))
    gate.set()
    for t in [first, *others]:
        t.join(timeout=30)

    assert [len(c) for c in calls] == [1, len(asks)]
    assert sorted(calls[1]) == sorted(asks)
    for q, k in asks.items():
        _, hits, warnings = results[q]
        assert [h.id for h in hits] == [h.id for h in expected[q]] and len(hits) == k
        assert [h.rank for h in hits] == list(range(1, k + 1))
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected[q]], atol=1e-5)
        assert warnings == []
    assert (batcher.batches, batcher.queries, batcher.searcher.requests) == (2, 5, 5)
    batcher.close()


def test_errors_reach_the_caller_and_the_worker_survives(shared_collection, tiny_encoder):
    batcher = TextBatcher(Searcher(shared_collection[1], tiny_encoder, calibration=None))
    with pytest.raises(UserError, match="CalibCLIP is not available"):
        batcher.search("a cat", 3, calib=True)
    _, hits, _ = batcher.search("a cat", 3)
    assert len(hits) == 3
    batcher.close()
    assert batcher._thread is None


def test_long_query_warning_goes_to_that_query_only(shared_collection, tiny_encoder):
    batcher = TextBatcher(Searcher(shared_collection[1], tiny_encoder))
    long_query = " ".join(["cat"] * 200)
    _, _, warns = batcher.search(long_query, 2)
    assert any("truncated" in w for w in warns)
    assert batcher.search("a cat", 2)[2] == []
    batcher.close()


def _recording(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    original = Index.search

    def recorded(self, query, k=10):
        calls.append([query] if isinstance(query, str) else list(query))
        return original(self, query, k=k)

    monkeypatch.setattr(Index, "search", recorded)
    return calls


def _ask_staggered(batcher: TextBatcher, delays: list[float]) -> None:
    threads = []
    for i, delay in enumerate(delays):
        time.sleep(delay)
        threads.append(threading.Thread(target=batcher.search, args=(f"query {i}", 2)))
        threads[-1].start()
    for t in threads:
        t.join(timeout=30)


def test_under_load_the_next_batch_waits_briefly_for_returning_callers(shared_collection, tiny_encoder, monkeypatch):
    calls = _recording(monkeypatch)
    batcher = TextBatcher(Searcher(shared_collection[1], tiny_encoder), gather_s=2.0)
    batcher._last = (3, 10.0)  # the previous batch answered 3 callers: expect 3 back, wait up to 2 s
    _ask_staggered(batcher, [0.0, 0.1, 0.1])
    assert [len(c) for c in calls] == [3]
    batcher.close()


def test_idle_server_answers_a_lone_query_at_once(shared_collection, tiny_encoder, monkeypatch):
    calls = _recording(monkeypatch)
    batcher = TextBatcher(Searcher(shared_collection[1], tiny_encoder), gather_s=2.0)
    t0 = time.perf_counter()
    batcher.search("a cat", 2)  # no previous batch: no waiting
    assert time.perf_counter() - t0 < 1.5 and [len(c) for c in calls] == [1]
    batcher.close()
