"""Micro-batching of text queries: concurrent /search/text requests share one text-tower pass.

One worker thread takes the first waiting query, then every other query already queued (up to
``max_batch``), and runs them as a single ``Index.search([q1, …, qn], k=max k)`` under the
Searcher lock; each request gets its own top-k cut of the result. A lone query on an idle server
is answered at once. Under load (the previous batch held several queries) the worker waits a
moment — at most ``gather_s`` and a tenth of the previous batch's time — for the callers of the
previous batch to send their next query: without that, the first caller back ran alone and the
others formed the next batch, alternating tiny and large batches (13 queries per batch on
average with 32 clients), and a tiny batch costs almost as much as a full one. Queries with and without calibration go in
separate batches. If a batch fails, each of its queries is retried alone, so one bad query (which
request validation should already have refused) fails only its own request. Text encoding pads each batch to its longest query under the attention mask,
so results equal one-by-one search up to float rounding.
"""

from __future__ import annotations

import queue
import threading
import time
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

    def __init__(self, searcher: Searcher, max_batch: int = 32, gather_s: float = 0.01) -> None:
        self.searcher = searcher
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._last = (0, 0.0)  # (queries, seconds) of the previous batch
        self.queue: queue.Queue[_Pending | None] = queue.Queue()
        self.batches = 0
        self.queries = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def search(self, query: str, k: int, calib: bool = False) -> tuple[Snapshot, list, list[str]]:
        """(snapshot, hits, warnings) for one query; blocks until its batch has run."""
        return self.submit(query, k, calib).result()

    def submit(self, query: str, k: int, calib: bool = False) -> Future:
        """Queue one query; the future holds (snapshot, hits, warnings) once its batch has run.

        An async endpoint awaits it (``asyncio.wrap_future``) instead of parking a pool thread.
        """
        self._ensure_started()
        item = _Pending(query, k, calib)
        self.queue.put(item)
        return item.future

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
            expected, took = self._last
            # under load, wait briefly for the previous batch's callers to come back
            deadline = time.perf_counter() + (min(self.gather_s, 0.1 * took) if expected > 1 else 0.0)
            while len(batch) < self.max_batch:
                wait = deadline - time.perf_counter() if len(batch) < expected else 0.0
                try:
                    item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close() while busy: finish this batch, then stop
                    self.queue.put(None)
                    break
                batch.append(item)
            t0 = time.perf_counter()
            for calib in (False, True):
                group = [p for p in batch if p.calib == calib]
                if group:
                    self._run(group, calib)
            self._last = (len(batch), time.perf_counter() - t0)

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
