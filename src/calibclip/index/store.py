"""On-disk embedding store: SQLite metadata + .npy embedding shards, written atomically.

Layout of ``<out>.idx/``::

    meta.sqlite          items(id, path, size, mtime, sha1, shard, row), info(key, value), failures(path, reason)
    shards/<set>-<n>.npy one file per (feature set, batch); sets are "plain" and, with CalibCLIP, "cve"

A batch is made durable in two steps: every shard file is written to a temporary name and
renamed into place, then one SQLite transaction records the batch's items. A crash between the
two leaves an orphan shard that nothing refers to, so an interrupted ``calibclip index`` loses
at most the batch in flight and the next run resumes.

One writer at a time: a writer (``writer=True``) holds an exclusive lock on ``<out>.idx/write.lock``
(``filelock``; released by the OS if the process dies) for as long as the store is open. Under
it, the writer first removes what a killed run left behind (``.tmp-*`` files, shards no item
refers to). Shard numbers are reserved in a transaction, so no two batches share a file. Readers
take no lock: SQLite's WAL lets them read the last committed state while a writer runs.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibclip.atomic import TMP_PREFIX, atomic_save_npy, file_mode
from calibclip.errors import UserError

# failure reason of a file the user removed with `calibclip rm`: kept out until the file changes
REMOVED = "removed with `calibclip rm` (re-added only when the file changes)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS items(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT UNIQUE NOT NULL,
  size INTEGER, mtime REAL, sha1 TEXT,
  shard INTEGER NOT NULL, row INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS info(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS failures(path TEXT PRIMARY KEY, size INTEGER, mtime REAL, reason TEXT);
"""
# The writer's per-batch shard reservation reads MAX(shard): without this index a scan of every row
# (measured 61 ms a batch at 500k items, 0.05 ms with it; built once in 0.2 s). Made by writers only,
# so a reader (search, serve) never writes to an index made before it existed.
SHARD_INDEX = "CREATE INDEX IF NOT EXISTS items_shard ON items(shard)"
LOCK_FILE = "write.lock"
DB_FILE = "meta.sqlite"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def damaged(what: str | Path, detail: object, root: str | Path) -> UserError:
    """The one-line error for a damaged index file, with the command that repairs it."""
    return UserError(f"{what}: the index is damaged ({detail}); rebuild it with "
                     f"`calibclip index FOLDER --out {root} --rebuild`.")


@dataclass(frozen=True)
class FileStat:
    """What identifies a version of a file: its path, size and modification time."""

    path: str
    size: int
    mtime: float


class EmbeddingStore:
    """Low-level access to one index folder: metadata rows and embedding shards."""

    def __init__(self, root: str | Path, create: bool = False, shared: bool = False, writer: bool = False,
                 wait: bool = True, on_wait: Callable[[str], None] | None = None,
                 discard_damaged: bool = False) -> None:
        """Open (``create``: or create) the index folder ``root``.

        ``shared``: the connection may be used from other threads (the caller serialises access).
        ``writer``: take the exclusive writer lock first; when another process holds it, wait
        (after telling ``on_wait``, default stderr) or, with ``wait=False``, raise a UserError at once.
        ``discard_damaged``: an unreadable meta.sqlite is deleted and started afresh (``--rebuild``).
        """
        self.root = Path(root)
        self._lock = None
        db = self.root / DB_FILE
        if not db.exists():
            if not create:
                raise UserError(f"{self.root}: not a calibclip index (no meta.sqlite); "
                                "build one with `calibclip index FOLDER --out INDEX`.")
        if create or writer:
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
        if writer:
            self._lock = _acquire_writer_lock(self.root, wait, on_wait or _stderr)
        try:
            try:
                self.conn = _connect(db, shared)
            except sqlite3.DatabaseError as exc:
                if not discard_damaged:
                    raise damaged(db, exc, self.root) from None
                for suffix in ("", "-wal", "-shm"):  # --rebuild: start from an empty database
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                self.conn = _connect(db, shared)
            if writer:
                self.conn.execute(SHARD_INDEX)
                self._remove_leftovers()
        except BaseException:
            self._release()
            raise

    def close(self) -> None:
        self.conn.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _remove_leftovers(self) -> None:
        """Temporary files of a killed writer, and shards no item refers to (a batch never committed)."""
        for folder in (self.root, self.root / "shards", self.root / "thumbs"):
            for tmp in folder.glob(f"{TMP_PREFIX}*"):
                tmp.unlink(missing_ok=True)
        used = {int(r[0]) for r in self.conn.execute("SELECT DISTINCT shard FROM items")}
        for f in (self.root / "shards").glob("*.npy"):
            try:
                shard = int(f.stem.rsplit("-", 1)[1])
            except (IndexError, ValueError):
                continue
            if shard not in used:
                f.unlink(missing_ok=True)

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

    def known_sha1(self) -> dict[str, str]:
        """path → SHA-1 of the bytes that were embedded."""
        return dict(self.conn.execute("SELECT path, sha1 FROM items"))

    def known_failures(self) -> dict[str, tuple[int, float]]:
        return {p: (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime FROM failures")}

    def removed_by_user(self) -> dict[str, tuple[int, float]]:
        """Files taken out with `calibclip rm`, with the size and mtime they had then."""
        return {p: (s, m) for p, s, m in
                self.conn.execute("SELECT path, size, mtime FROM failures WHERE reason=?", (REMOVED,))}

    def next_shard(self) -> int:
        """Reserve a shard number: above every one in use or reserved before, chosen inside a transaction."""
        with self._tx():
            used = self.conn.execute("SELECT COALESCE(MAX(shard), -1) FROM items").fetchone()[0]
            reserved = self.conn.execute("SELECT value FROM info WHERE key='next_shard'").fetchone()
            shard = max(int(used) + 1, int(reserved[0]) if reserved else 0)
            self.conn.execute("INSERT OR REPLACE INTO info(key, value) VALUES('next_shard', ?)", (str(shard + 1),))
        return shard

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
        """(ids, embeddings float32 (n, D), paths) for every item, ordered by id; shards memory-mapped.

        The rows' ids, shards and offsets come in chunks straight into int64 arrays and the paths one
        by one, both in one read snapshot: no list of a million 4-tuples (at 1M items ~150 MB of
        short-lived objects whose freed arenas stay resident) beside the matrix.
        """
        dim = int(self.get_info("dim", "0") or 0)
        own_tx = not self.conn.in_transaction
        if own_tx:
            self.conn.execute("BEGIN")  # one snapshot for both queries, even with a writer committing
        try:
            cur = self.conn.execute("SELECT id, shard, row FROM items ORDER BY id")
            chunks = []
            while batch := cur.fetchmany(1 << 16):
                chunks.append(np.array(batch, dtype=np.int64).reshape(-1, 3))
            paths = [r[0] for r in self.conn.execute("SELECT path FROM items ORDER BY id")]
        finally:
            if own_tx:
                self.conn.execute("COMMIT")
        if not chunks:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32), []
        table = np.concatenate(chunks)
        ids, shards, local = table[:, 0].copy(), table[:, 1], table[:, 2]
        out = np.empty((len(ids), dim), np.float32)
        order = np.argsort(shards, kind="stable")  # rows grouped by shard, one pass instead of one per shard
        bounds = np.flatnonzero(np.diff(shards[order])) + 1
        for sel in np.split(order, bounds):
            shard = int(shards[sel[0]])
            path = self.shard_path(feature_set, shard)
            if not path.exists():
                raise damaged(path, "embedding shard missing", self.root)
            try:
                arr = np.load(path, mmap_mode="r")
                if arr.ndim != 2 or arr.shape[1] != dim or int(local[sel].max()) >= len(arr):
                    raise ValueError(f"shape {arr.shape}, expected rows of {dim}")
                out[sel] = arr[local[sel]]
            except (ValueError, OSError, EOFError) as exc:  # truncated, random bytes, wrong shape
                raise damaged(path, f"unreadable embedding shard: {exc}", self.root) from None
        return ids, out, paths

    # ---- helpers -------------------------------------------------------------------------
    def _tx(self) -> "_Transaction":
        return _Transaction(self.conn)


def _connect(db: Path, shared: bool) -> sqlite3.Connection:
    """Open meta.sqlite in WAL mode (readers see committed batches while a writer runs)."""
    conn = sqlite3.connect(db, isolation_level=None,  # explicit transactions below
                           check_same_thread=not shared, timeout=30.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        conn.execute("SELECT id, path, size, mtime, sha1, shard, row FROM items LIMIT 1").fetchall()
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


def _acquire_writer_lock(root: Path, wait: bool, on_wait: Callable[[str], None]):
    """The exclusive writer lock of an index folder (a ``filelock.FileLock``, held until released)."""
    from filelock import FileLock, Timeout

    lock = FileLock(root / LOCK_FILE, mode=file_mode())
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise UserError(f"{root}: another `calibclip index` is writing this index; wait until it finishes "
                            "(run again without --no-wait to queue behind it).") from None
        on_wait(f"{root}: another `calibclip index` is writing this index; waiting for it to finish "
                "(Ctrl-C to stop) …")
        lock.acquire()
    return lock


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT/ROLLBACK as a context manager."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
