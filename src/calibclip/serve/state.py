"""The service's search state: one loaded model, one open index, swapped atomically on reload.

Concurrency model: FastAPI runs the (sync) endpoints in a thread pool; every call that touches
the model or the index goes through ``Searcher.call`` which holds one lock, so torch, FAISS and
the calibration toggle are never used by two requests at once. A reload opens and warms the new
index *outside* the lock (searches keep being answered from the old one) and only swaps the
reference under it, so there is no downtime.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from calibclip.errors import UserError
from calibclip.index import Index

T = TypeVar("T")


@dataclass
class Snapshot:
    """An open index with everything a request needs, read-only once built."""

    index: Index
    folder: Path | None  # resolved collection folder recorded at build time
    id_to_path: dict[int, str]
    id_to_pos: dict[int, int]
    opened_at: float
    info: dict[str, str]  # the index's info table, read once: no SQLite access outside the lock
    calibration: dict | None  # CalibConfig (as a dict) the gallery was embedded with

    @property
    def size(self) -> int:
        return len(self.id_to_path)


def open_snapshot(path: Path, encoder: Any) -> Snapshot:
    """Open ``path`` and load its matrix and FAISS index so the first search is not slow."""
    # Built on one thread, used from the request pool; access is serialised by the Searcher lock.
    index = Index.open(path, encoder, shared=True)
    ids, _, paths = index.matrix()
    index._faiss_index()  # warm: built here, outside the lock
    info = index.info
    folder = info.get("folder")
    return Snapshot(index=index, folder=Path(folder).resolve() if folder else None,
                    id_to_path={int(i): p for i, p in zip(ids, paths)},
                    id_to_pos={int(i): n for n, i in enumerate(ids)}, opened_at=time.time(),
                    info=info, calibration=index.calibration)


class Searcher:
    """Serialises model and index calls, holds the calibration and φ, reloads without downtime."""

    def __init__(self, index_path: str | Path, encoder: Any, calibration: Any = None, phi: Any = None) -> None:
        self.index_path = Path(index_path)
        self.encoder = encoder
        self.calibration = calibration  # CalibConfig used when a request asks for calib=true
        self.phi = phi
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.snapshot = open_snapshot(self.index_path, encoder)
        self.requests = 0
        self.started_at = time.time()

    def call(self, fn: Callable[[Snapshot], T], calib: bool = False, count: int = 1) -> tuple[T, list[str]]:
        """Run ``fn(snapshot)`` under the lock, with calibration on or off; returns (result, warnings).

        ``count`` is how many requests the call answers (a batch of text queries counts each).
        """
        if calib and self.calibration is None:
            raise UserError("CalibCLIP is not available on this server (calibclip.calib is missing or the "
                            "server was started without a calibration config); search with calib=false.")
        with self._lock:
            self.requests += count
            snap = self.snapshot
            saved = self.encoder.calibration
            self.encoder.calibration = self.calibration if calib else None
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = fn(snap)
            finally:
                self.encoder.calibration = saved
        return result, [str(w.message) for w in caught]

    def reload(self) -> tuple[Snapshot, Snapshot]:
        """Re-open the index (new images added by ``calibclip index``); returns (old, new) snapshots."""
        with self._reload_lock:  # two reloads at once would only waste work
            new = open_snapshot(self.index_path, self.encoder)
            with self._lock:
                old, self.snapshot = self.snapshot, new
            old.index.store.close()  # no request holds it: they all run under the lock
        return old, new

    def close(self) -> None:
        with self._lock:
            self.snapshot.index.store.close()
