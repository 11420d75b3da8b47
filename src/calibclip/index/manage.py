"""Looking after an index: what it holds (``calibclip info`` / ``ls``) and forgetting images (``rm``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibclip.index.store import REMOVED, EmbeddingStore, FileStat


def _disk_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())


def _last_update(root: Path) -> str | None:
    """Newest modification time of the files that record items (metadata, its WAL, shards), local ISO 8601."""
    times = [f.stat().st_mtime for f in [root / "meta.sqlite", root / "meta.sqlite-wal", *root.glob("shards/*")]
             if f.exists()]
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(max(times))) if times else None


def describe(root: str | Path) -> dict[str, Any]:
    """Everything ``calibclip info`` shows, as plain JSON-able values (missing fields are None).

    Keys: path, folder, model, model_fingerprint, items, skipped, dim, dtype, calibration,
    feature_sets, ann (kind, factory, recall10, queries, stale), size_bytes, last_update, format.
    """
    from calibclip.index.ann import ids_fingerprint

    root = Path(root)
    store = EmbeddingStore(root)
    try:
        info = store.info()
        rows = store.rows()
        ann = json.loads(info.get("ann", "null") or "null")
        if ann is not None:
            import numpy as np

            ids = np.array([r[0] for r in rows], dtype=np.int64)
            ann = {"kind": ann.get("kind"), "factory": ann.get("factory", "Flat (exact)" if ann.get("kind") == "flat"
                                                                 else None),
                   "recall10": ann.get("recall10", 1.0 if ann.get("kind") == "flat" else None),
                   "queries": ann.get("queries"),
                   "stale": ann.get("kind") != "flat" and ann.get("fingerprint") != ids_fingerprint(ids)}
        fingerprint = info.get("model_fingerprint") or None  # indexes from before fingerprints have none
        return {"path": str(root.resolve()), "folder": info.get("folder"), "model": info.get("model"),
                "model_fingerprint": fingerprint, "items": len(rows), "skipped": len(store.failures()),
                "dim": int(info["dim"]) if info.get("dim") else None, "dtype": info.get("dtype"),
                "calibration": json.loads(info.get("calib", "null") or "null"),
                "feature_sets": store.feature_sets(), "ann": ann, "size_bytes": _disk_bytes(root),
                "last_update": _last_update(root), "format": info.get("format")}
    finally:
        store.close()


@dataclass
class RemoveReport:
    """What ``remove`` did: items forgotten, arguments that matched nothing, how the ANN index was handled."""

    removed: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    ann: str = "none"  # none (exact search), rebuilt, stale (search falls back to exact until `calibclip index`)


def remove(root: str | Path, paths: Iterable[str | Path]) -> RemoveReport:
    """Forget images (the files stay on disk); a folder argument forgets every item under it.

    A removed file that still exists is recorded as skipped, with its size and mtime, so the next
    ``calibclip index`` leaves it out unless it changes. The approximate index, if any, is rebuilt
    with its recorded settings (or, when that is impossible, left stale: search is then exact).
    Holds the index's writer lock, so it waits for a running ``calibclip index`` (with a message).
    """
    from calibclip.errors import UserError
    from calibclip.index.ann import build_store_ann

    store = EmbeddingStore(root, writer=True)
    report = RemoveReport()
    try:
        known = [r[1] for r in store.rows()]
        indexed = set(known)
        gone: list[str] = []
        for arg in paths:
            p = str(Path(arg).expanduser().resolve())
            # an indexed file, else a folder: every item under it
            hit = [p] if p in indexed else [k for k in known if k.startswith(p.rstrip(os.sep) + os.sep)]
            (gone.extend(hit) if hit else report.not_found.append(str(arg)))
        gone = list(dict.fromkeys(gone))
        if not gone:
            return report
        store.remove(gone)
        keep_out = []
        for p in gone:
            try:
                st = os.stat(p)
            except OSError:
                continue
            keep_out.append((FileStat(p, st.st_size, st.st_mtime), REMOVED))
        store.add_failures(keep_out)
        report.removed = gone
        ann = json.loads(store.get_info("ann", "null") or "null")
        if ann is not None and ann.get("kind") != "flat":
            try:
                build_store_ann(store, None)
                report.ann = "rebuilt"
            except UserError:
                report.ann = "stale"
        return report
    finally:
        store.close()
