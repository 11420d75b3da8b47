"""Where a collection's images come from: a local folder, a manifest file, or an fsspec URL.

Every source becomes a list of :class:`~calibclip.index.store.FileStat` (path or URL, size,
mtime), the same records the single-process indexer stores, so incremental updates and resume
work identically. Local paths are absolute and resolved (exactly as ``calibclip index`` stores
them); remote files keep their full URL.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from calibclip.errors import UserError
from calibclip.images import IMAGE_EXTENSIONS
from calibclip.index.store import FileStat

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
PATH_COLUMNS = ("path", "url", "uri", "file", "filename", "image", "image_path")


def is_url(text: str) -> bool:
    """``s3://…``, ``gs://…``, ``https://…``, ``file://…`` (anything with a scheme) is a URL."""
    return "://" in text


def is_manifest(source: str) -> bool:
    """A source naming a CSV/TSV/JSONL/Parquet file is a manifest (list of paths or URLs)."""
    return source.lower().rstrip("/").endswith(MANIFEST_SUFFIXES)


def _is_image(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return Path(base).suffix.lower() in IMAGE_EXTENSIONS and not base.startswith(".")


def _mtime(info: dict) -> float:
    """Modification time of an fsspec ``info`` record (local, S3, GCS, HTTP spellings); 0 when unknown."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            from datetime import datetime

            try:
                return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def _fs(url: str):
    try:
        import fsspec
    except ImportError:
        raise UserError(f"{url}: URLs need fsspec; `pip install 'calibclip[ray]'` (plus s3fs/gcsfs for "
                        "s3:// or gs://).") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UserError(f"{url}: no filesystem for this URL ({exc}); install its fsspec backend "
                        "(s3fs for s3://, gcsfs for gs://, aiohttp for https://).") from None


def list_folder(folder: str | Path) -> list[FileStat]:
    """Every image under a local folder, as the single-process ``calibclip index`` scans it."""
    from calibclip.index.embed import scan

    if not Path(folder).is_dir():
        raise UserError(f"{folder}: not a directory, manifest (.csv/.jsonl/.parquet) or URL; pass the images' "
                        "folder, a manifest of paths/URLs, or a URL such as s3://bucket/images/.")
    return scan(folder)


def list_url(url: str) -> list[FileStat]:
    """Every image under an fsspec URL prefix (``s3://bucket/images/``), or the one file it names."""
    fs, root = _fs(url)
    protocol = url.split("://", 1)[0]
    try:
        if fs.isfile(root):
            found = {root: fs.info(root)}
        else:
            found = fs.find(root, detail=True)
    except (OSError, PermissionError) as exc:
        raise UserError(f"{url}: cannot list ({exc}).") from None
    out = []
    for name, info in sorted(found.items()):
        if _is_image(name) and info.get("type", "file") == "file":
            full = name if is_url(name) else f"{protocol}://{name.lstrip('/') if protocol != 'file' else name}"
            out.append(FileStat(full, int(info.get("size") or 0), _mtime(info)))
    return out


def _manifest_rows(path: str) -> list[str]:
    """The path column of a manifest (first matching column name, else the first column)."""
    low = path.lower()
    if low.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{path}: Parquet manifests need pyarrow (`pip install 'calibclip[ray]'`).") from None
        table = pq.read_table(path)
        names = [c.lower() for c in table.column_names]
        col = next((table.column_names[names.index(c)] for c in PATH_COLUMNS if c in names), table.column_names[0])
        return [str(v) for v in table.column(col).to_pylist() if v]
    text = Path(path).read_text(encoding="utf-8")
    if low.endswith((".jsonl", ".ndjson")):
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: not JSON ({exc.msg}); one object per line, e.g. "
                                '{"path": "img/1.jpg"}.') from None
            if isinstance(rec, str):
                out.append(rec)
                continue
            key = next((k for k in rec if k.lower() in PATH_COLUMNS), None)
            if key is None:
                raise UserError(f"{path}:{n}: no path field; use one of {', '.join(PATH_COLUMNS)}.")
            out.append(str(rec[key]))
        return out
    dialect = "excel-tab" if low.endswith(".tsv") else "excel"
    rows = [r for r in csv.reader(text.splitlines(), dialect=dialect) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    if col is None:  # no recognised header: the first column holds paths, first row included
        return [r[0].strip() for r in rows]
    return [r[col].strip() for r in rows[1:] if len(r) > col and r[col].strip()]


def list_manifest(manifest: str | Path) -> list[FileStat]:
    """Files named by a manifest; relative paths are relative to the manifest's folder.

    Local entries that do not exist are reported in one error (first few named), since a
    manifest with wrong paths is a user mistake best fixed before any embedding starts.
    """
    manifest = str(manifest)
    if is_url(manifest):
        raise UserError(f"{manifest}: copy the manifest locally first; its entries may be URLs.")
    if not Path(manifest).is_file():
        raise UserError(f"{manifest}: no such manifest file.")
    base = Path(manifest).resolve().parent
    out, missing, seen = [], [], set()
    remote: dict[str, list[str]] = {}
    for entry in _manifest_rows(manifest):
        if is_url(entry) and not entry.startswith("file://"):
            remote.setdefault(entry.split("://", 1)[0], []).append(entry)
            continue
        p = Path(entry.removeprefix("file://")).expanduser()
        p = (p if p.is_absolute() else base / p).resolve()
        if str(p) in seen:
            continue
        seen.add(str(p))
        try:
            st = p.stat()
        except OSError:
            missing.append(entry)
            continue
        out.append(FileStat(str(p), st.st_size, st.st_mtime))
    if missing:
        raise UserError(f"{manifest}: {len(missing)} listed file(s) do not exist (e.g. {', '.join(missing[:3])}); "
                        "fix the manifest (relative paths are relative to its folder).")
    for urls in remote.values():
        fs, _ = _fs(urls[0])
        for url in dict.fromkeys(urls):
            try:
                info = fs.info(url)
            except (OSError, FileNotFoundError) as exc:
                raise UserError(f"{manifest}: cannot stat {url} ({exc}).") from None
            out.append(FileStat(url, int(info.get("size") or 0), _mtime(info)))
    return out


def list_source(source: str | Path) -> list[FileStat]:
    """Folder, manifest or URL → the files to index (see the module docstring)."""
    source = str(source)
    if is_manifest(source):
        return list_manifest(source)
    if is_url(source) and not source.startswith("file://"):
        return list_url(source)
    return list_folder(source.removeprefix("file://"))


def read_bytes(path: str) -> bytes:
    """Bytes of a local path or an fsspec URL (runs on the workers)."""
    if is_url(path):
        import fsspec

        with fsspec.open(path, "rb") as fh:
            return fh.read()
    return Path(path).read_bytes()
