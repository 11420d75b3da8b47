"""Micro-batching of text queries: concurrent /search/text requests share one text-tower pass.

One worker thread takes the first waiting query, then every other query already queued (up to
``max_batch``), and runs them as a single ``Index.search([q1, …, qn], k=max k)`` under the
Searcher lock; each request gets its own top-k cut of the result. Nothing waits for a batch to
fill: a lone query is answered at once, and batches form only when queries arrive while the
model is busy, which is exactly when batching pays. Queries with and without calibration go in
separate batches. If a batch fails, each of its queries is retried alone, so one bad query (which
request validation should already have refused) fails only its own request. Text encoding pads each batch to its longest query under the attention mask,
so results equal one-by-one search up to float rounding.
"""

from __future__ import annotations

import queue
import threading
import warnings
from concurrent.futures import Future
from dataclasses import dataclass, field

from calibclip.serve.state import Searcher, Snapshot


@dataclass
class _Pending:
    query: str
    k: int
    calib: bool
    future: Future = field(default_factory=Future)


class TextBatcher:
    """Serve text searches from one worker thread, batching those that queue up meanwhile."""

    def __init__(self, searcher: Searcher, max_batch: int = 32) -> None:
        self.searcher = searcher
        self.max_batch = max_batch
        self.queue: queue.Queue[_Pending | None] = queue.Queue()
        self.batches = 0
        self.queries = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def search(self, query: str, k: int, calib: bool = False) -> tuple[Snapshot, list, list[str]]:
        """(snapshot, hits, warnings) for one query; blocks until its batch has run."""
        self._ensure_started()
        item = _Pending(query, k, calib)
        self.queue.put(item)
        return item.future.result()

    def close(self) -> None:
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="calibclip-text-batcher", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close() while busy: finish this batch, then stop
                    self.queue.put(None)
                    break
                batch.append(item)
            for calib in (False, True):
                group = [p for p in batch if p.calib == calib]
                if group:
                    self._run(group, calib)

    def _run(self, group: list[_Pending], calib: bool) -> None:
        queries = [p.query for p in group]

        def fn(snap: Snapshot) -> tuple[Snapshot, list, list[list[str]]]:
            per_query = []
            for q in queries:  # warnings (e.g. truncation) belong to the query that caused them
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    snap.index.check_query(q)
                per_query.append([str(w.message) for w in caught])
            hits = snap.index.search(queries, k=max(p.k for p in group))
            return snap, hits, per_query

        try:
            (snap, hits, warns), _ = self.searcher.call(fn, calib=calib, count=len(group))
        except Exception as exc:
            if len(group) > 1:  # find the culprit: the other queries must not fail with it
                for p in group:
                    self._run([p], calib)
                return
            group[0].future.set_exception(exc)
            return
        self.batches += 1
        self.queries += len(group)
        for p, h, w in zip(group, hits, warns):
            p.future.set_result((snap, h[:p.k], w))
