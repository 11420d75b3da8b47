"""On-disk embedding store: SQLite metadata + .npy embedding shards, written atomically.

Layout of ``<out>.idx/``::

    meta.sqlite          items(id, path, size, mtime, sha1, shard, row), info(key, value), failures(path, reason)
    shards/<set>-<n>.npy one file per (feature set, batch); sets are "plain" and, with CalibCLIP, "cve"

A batch is made durable in two steps: every shard file is written to a temporary name and
renamed into place, then one SQLite transaction records the batch's items. A crash between the
two leaves an orphan shard that nothing refers to (it is overwritten on resume), so an
interrupted ``calibclip index`` loses at most the batch in flight and the next run resumes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibclip.atomic import atomic_save_npy
from calibclip.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS items(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT UNIQUE NOT NULL,
  size INTEGER, mtime REAL, sha1 TEXT,
  shard INTEGER NOT NULL, row INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS info(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS failures(path TEXT PRIMARY KEY, size INTEGER, mtime REAL, reason TEXT);
"""


@dataclass(frozen=True)
class FileStat:
    """What identifies a version of a file: its path, size and modification time."""

    path: str
    size: int
    mtime: float


class EmbeddingStore:
    """Low-level access to one index folder: metadata rows and embedding shards."""

    def __init__(self, root: str | Path, create: bool = False, shared: bool = False) -> None:
        """``shared``: the connection may be used from other threads (the caller serialises access)."""
        self.root = Path(root)
        db = self.root / "meta.sqlite"
        if not db.exists():
            if not create:
                raise UserError(f"{self.root}: not a calibclip index (no meta.sqlite); "
                                "build one with `calibclip index FOLDER --out INDEX`.")
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(db, isolation_level=None,  # explicit transactions below
                                    check_same_thread=not shared)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # ---- info ----------------------------------------------------------------------------
    def get_info(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM info WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_info(self, **values: object) -> None:
        with self._tx():
            for key, value in values.items():
                text = value if isinstance(value, str) else json.dumps(value)
                self.conn.execute("INSERT OR REPLACE INTO info(key, value) VALUES(?, ?)", (key, text))

    def info(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM info").fetchall())

    # ---- items ---------------------------------------------------------------------------
    def known(self) -> dict[str, tuple[int, float]]:
        """path → (size, mtime) of every embedded item."""
        return {p: (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime FROM items")}

    def known_failures(self) -> dict[str, tuple[int, float]]:
        return {p: (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime FROM failures")}

    def next_shard(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(shard), -1) FROM items").fetchone()
        return int(row[0]) + 1

    def shard_path(self, feature_set: str, shard: int) -> Path:
        return self.root / "shards" / f"{feature_set}-{shard:06d}.npy"

    def add_batch(self, stats: Sequence[FileStat], sha1s: Sequence[str],
                  features: dict[str, np.ndarray], dtype: str = "float16") -> int:
        """Durably add one batch: shard files first (atomic), then the metadata in one transaction."""
        shard = self.next_shard()
        for name, array in features.items():
            if len(array) != len(stats):
                raise ValueError(f"feature set {name}: {len(array)} rows for {len(stats)} items")
            atomic_save_npy(self.shard_path(name, shard), np.ascontiguousarray(array, dtype=dtype))
        with self._tx():
            paths = [(s.path,) for s in stats]
            self.conn.executemany("DELETE FROM items WHERE path=?", paths)  # changed files: replace
            self.conn.executemany("DELETE FROM failures WHERE path=?", paths)
            self.conn.executemany(
                "INSERT INTO items(path, size, mtime, sha1, shard, row) VALUES(?,?,?,?,?,?)",
                [(s.path, s.size, s.mtime, h, shard, r) for r, (s, h) in enumerate(zip(stats, sha1s))])
        return shard

    def add_failures(self, failures: Iterable[tuple[FileStat, str]]) -> None:
        with self._tx():
            self.conn.executemany("INSERT OR REPLACE INTO failures(path, size, mtime, reason) VALUES(?,?,?,?)",
                                  [(s.path, s.size, s.mtime, reason) for s, reason in failures])

    def remove(self, paths: Iterable[str]) -> int:
        """Forget items (files deleted from the collection)."""
        rows = [(p,) for p in paths]
        with self._tx():
            self.conn.executemany("DELETE FROM items WHERE path=?", rows)
            self.conn.executemany("DELETE FROM failures WHERE path=?", rows)
        return len(rows)

    def clear(self) -> None:
        """Forget every item (re-encode everything, e.g. with a new calibration)."""
        with self._tx():
            self.conn.execute("DELETE FROM items")
            self.conn.execute("DELETE FROM failures")
        for f in (self.root / "shards").glob("*.npy"):
            f.unlink()

    def rows(self) -> list[tuple[int, str, int, int]]:
        """(id, path, shard, row) of every item, ordered by id."""
        return self.conn.execute("SELECT id, path, shard, row FROM items ORDER BY id").fetchall()

    def failures(self) -> list[tuple[str, str]]:
        return self.conn.execute("SELECT path, reason FROM failures ORDER BY path").fetchall()

    def feature_sets(self) -> list[str]:
        names = {p.name.rsplit("-", 1)[0] for p in (self.root / "shards").glob("*.npy")}
        return sorted(names)

    def load_matrix(self, feature_set: str = "plain") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(ids, embeddings float32 (n, D), paths) for every item, ordered by id; shards memory-mapped."""
        rows = self.rows()
        dim = int(self.get_info("dim", "0") or 0)
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32), []
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        shards = np.array([r[2] for r in rows])
        local = np.array([r[3] for r in rows])
        out = np.empty((len(rows), dim), np.float32)
        for shard in np.unique(shards):
            sel = np.nonzero(shards == shard)[0]
            path = self.shard_path(feature_set, int(shard))
            if not path.exists():
                raise UserError(f"{path}: embedding shard missing; the index is damaged — rebuild it with "
                                "`calibclip index` (it re-embeds what is missing after `--rebuild`).")
            arr = np.load(path, mmap_mode="r")
            out[sel] = arr[local[sel]]
        return ids, out, [r[1] for r in rows]

    # ---- helpers -------------------------------------------------------------------------
    def _tx(self) -> "_Transaction":
        return _Transaction(self.conn)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT/ROLLBACK as a context manager."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
