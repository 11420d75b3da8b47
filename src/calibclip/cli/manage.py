"""`calibclip info`, `ls`, `rm` and `export`: look after an index without re-embedding anything."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli.common import console, escape, warn
from calibclip.errors import UserError

INDEX_ARG = typer.Argument(..., metavar="INDEX", help="Index folder built by `calibclip index` (or by "
                           "`calibclip search FOLDER`, see `calibclip info`).")


def _check(index_path: Path) -> None:
    if not (index_path / "meta.sqlite").exists():
        raise UserError(f"{index_path}: not a calibclip index (no meta.sqlite); build one with "
                        f"`calibclip index FOLDER --out {index_path}`.")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def info_cmd(index_path: Path = INDEX_ARG,
             as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """What an index holds: model, items, dimensions, dtype, calibration, search index and its recall, size."""
    import json

    from calibclip.index.manage import describe

    _check(index_path)
    d = describe(index_path)
    if as_json:
        typer.echo(json.dumps(d, indent=1))
        return
    ann = d["ann"]
    if ann is None:
        ann_text = "exact (brute force)"
    else:
        recall = f", recall@10 {ann['recall10']:.3f} vs exact" if ann.get("recall10") is not None else ""
        queries = f" on {ann['queries']} sampled queries" if ann.get("queries") else ""
        stale = (" — stale (items changed): search is exact until `calibclip index` rebuilds it"
                 if ann["stale"] else "")
        ann_text = f"{ann['kind']} ({ann.get('factory') or '?'}){recall}{queries}{stale}"
    calib = d["calibration"]
    rows = [("index", d["path"]), ("folder", d["folder"]), ("model", d["model"]),
            ("model fingerprint", d["model_fingerprint"] or "not recorded"),
            ("items", f"{d['items']:,}" + (f" ({d['skipped']} skipped, see `calibclip ls --skipped`)"
                                            if d["skipped"] else "")),
            ("dimensions", d["dim"]), ("dtype", d["dtype"]),
            ("calibration", "none" if calib is None else "CalibCLIP CVE features stored " + json.dumps(calib)),
            ("feature sets", ", ".join(d["feature_sets"]) or "none"), ("search index", ann_text),
            ("size on disk", _size(d["size_bytes"])), ("last update", d["last_update"])]
    for key, value in rows:
        console.print(f"[bold]{key:>17}[/bold]  {escape(str(value))}", highlight=False)


def ls_cmd(index_path: Path = INDEX_ARG,
           skipped: bool = typer.Option(False, "--skipped", help="List the skipped files and why, instead.")) -> None:
    """Paths of the indexed images, one per line (with --skipped: skipped files, TAB, reason)."""
    from calibclip.index.store import EmbeddingStore

    _check(index_path)
    store = EmbeddingStore(index_path)
    try:
        lines = [f"{p}\t{why}" for p, why in store.failures()] if skipped else [r[1] for r in store.rows()]
    finally:
        store.close()
    for line in lines:
        typer.echo(line)


def rm_cmd(index_path: Path = INDEX_ARG,
           paths: list[Path] = typer.Argument(..., metavar="PATH...", help="Images (or folders) to forget; "
                                              "the files themselves are not touched.")) -> None:
    """Remove images from an index without deleting the files (a later `calibclip index` leaves them out)."""
    from calibclip.index.manage import remove

    _check(index_path)
    report = remove(index_path, paths)
    for p in report.not_found:
        warn(f"not in the index: {p}")
    if not report.removed:
        raise UserError(f"{index_path}: none of the given paths is in the index; see `calibclip ls {index_path}`.")
    ann = {"rebuilt": "; search index rebuilt",
           "stale": "; the approximate search index is stale (search is exact until `calibclip index`)"}
    console.print(f"removed {len(report.removed)} image(s) from {index_path}{ann.get(report.ann, '')}",
                  highlight=False, markup=False)


def export_cmd(index_path: Path = INDEX_ARG,
               fmt: str = typer.Option("npy", "--format", help="npy (clip-retrieval's img_emb/img_emb_0.npy + "
                                       "ids + paths) or parquet (columns id, path, embedding; needs pyarrow)."),
               out: Path = typer.Option(None, "--out", "-o", help="Output folder (npy) or .parquet file "
                                        "(default: INDEX-embeddings / INDEX.parquet beside the index)."),
               features: str = typer.Option("plain", "--features", help="Feature set: plain, or cve on an "
                                            "index built with --calib.")) -> None:
    """Export embeddings + paths for pandas / pyarrow / numpy (as clip-retrieval users load them)."""
    from calibclip.index.export import export_embeddings
    from calibclip.index.store import EmbeddingStore

    _check(index_path)
    if fmt not in ("npy", "parquet"):
        raise UserError(f"--format {fmt}: use npy or parquet.")
    stem = index_path.resolve()
    out = out or stem.with_name(f"{stem.stem}-embeddings" if fmt == "npy" else f"{stem.stem}.parquet")
    store = EmbeddingStore(index_path)
    try:
        if features not in store.feature_sets():
            raise UserError(f"--features {features}: this index has {', '.join(store.feature_sets()) or 'none'}.")
        ids, emb, paths = store.load_matrix(features)
    finally:
        store.close()
    written = export_embeddings(ids, emb, paths, out, fmt)
    console.print(f"exported {len(ids)} embeddings ({emb.shape[1] if emb.ndim == 2 else 0}-d float32) → "
                  + ", ".join(str(p) for p in written), highlight=False, markup=False)
