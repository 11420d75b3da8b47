"""Getting things out of an index: the files of search hits (copies or links), the embeddings as npy / parquet."""

from __future__ import annotations

import filecmp
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calibclip.atomic import atomic_save_npy, atomic_write, atomic_write_text
from calibclip.errors import UserError


def _same(existing: Path, source: Path, link: bool) -> bool:
    """Is ``existing`` already this source (the same link target, or a file with identical bytes)?"""
    if link:
        return existing.is_symlink() and Path(os.readlink(existing)) == source
    return existing.is_file() and not existing.is_symlink() and filecmp.cmp(existing, source, shallow=False)


def _free_name(dest: Path, source: Path, link: bool, taken: set[Path]) -> tuple[Path, bool]:
    """(target path, already there): ``name.jpg``, else ``name-1.jpg``, ``name-2.jpg`` … never overwriting
    a different file; an identical one already in place is reused."""
    stem, suffix = source.stem, source.suffix
    for i in range(100_000):
        cand = dest / (source.name if i == 0 else f"{stem}-{i}{suffix}")
        if cand in taken:
            continue
        if not os.path.lexists(cand):
            return cand, False
        if _same(cand, source, link):
            return cand, True
    raise UserError(f"{dest}: too many files named like {source.name}; export into an empty folder.")


def export_files(paths: Iterable[str | Path], dest: str | Path, link: bool = False) -> list[Path]:
    """Copy (or symlink, ``link``) each file into ``dest``, in order; returns the paths written.

    Files with the same name from different folders get ``-1``, ``-2`` … suffixes; nothing that exists
    is overwritten. Copies keep the modification time and appear atomically (temp file + rename).
    """
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder; give a folder to export the matches into.")
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[Path] = set()
    for p in paths:
        source = Path(p).resolve()
        if not source.is_file():
            raise UserError(f"{p}: indexed file no longer exists; run `calibclip index` to refresh the index.")
        target, present = _free_name(dest, source, link, taken)
        taken.add(target)
        if not present:
            if link:
                os.symlink(source, target)
            else:
                atomic_write(target, lambda fh, s=source: shutil.copyfileobj(open(s, "rb"), fh))
                shutil.copystat(source, target)
        written.append(target)
    return written


def export_embeddings(ids: np.ndarray, embeddings: np.ndarray, paths: list[str], out: str | Path,
                      fmt: str) -> list[Path]:
    """Write embeddings + paths in the layout clip-retrieval users load.

    ``npy``: clip-retrieval's ``OUT/img_emb/img_emb_0.npy`` (float32, n × D, row i ↔ path i) with
    ``ids_0.npy`` (index ids) and ``paths_0.txt`` (one path a line) beside it.
    ``parquet``: one file ``OUT`` (``OUT/embeddings.parquet`` when OUT is a folder or has no suffix)
    with columns ``id``, ``path``, ``embedding`` (fixed-size list of float32), read with
    ``pandas.read_parquet`` or ``pyarrow.parquet.read_table``.
    """
    out = Path(out).expanduser()
    emb = np.ascontiguousarray(embeddings, np.float32)
    if fmt == "npy":
        folder = out / "img_emb"
        written = [atomic_save_npy(folder / "img_emb_0.npy", emb), atomic_save_npy(folder / "ids_0.npy",
                                                                                     np.asarray(ids, np.int64))]
        written.append(atomic_write_text(folder / "paths_0.txt", "".join(f"{p}\n" for p in paths)))
        return written
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("--format parquet needs pyarrow: pip install 'calibclip[ray]' (or pip install "
                            "pyarrow), or use --format npy.") from None
        target = out / "embeddings.parquet" if out.is_dir() or not out.suffix else out
        flat = pa.array(emb.reshape(-1), pa.float32())
        table = pa.table({"id": pa.array(np.asarray(ids, np.int64)), "path": pa.array(paths, pa.string()),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1] if emb.ndim == 2 else 0)})
        atomic_write(target, lambda fh: pq.write_table(table, fh), suffix=".parquet")
        return [target]
    raise UserError(f"--format {fmt}: use npy or parquet.")
