"""Per-user cache locations (XDG on Linux via platformdirs; ``$CALIBCLIP_CACHE`` overrides)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """``$CALIBCLIP_CACHE``, else the user cache dir (``$XDG_CACHE_HOME/calibclip``, ``~/.cache/calibclip``)."""
    base = os.environ.get("CALIBCLIP_CACHE")
    if base:
        return Path(base).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("calibclip", appauthor=False))


def folder_index_path(folder: str | Path, model: str, variant: str = "") -> Path:
    """Where ``calibclip search FOLDER`` keeps the index of a plain folder: one per (absolute folder, model).

    ``variant`` separates galleries embedded differently (e.g. with CalibCLIP's CVE).
    A local model directory is keyed by its absolute path, an HF id by itself.
    """
    folder = Path(folder).expanduser().resolve()
    m = Path(model).expanduser()
    model_key = str(m.resolve()) if m.exists() else str(model)
    digest = hashlib.sha1("\0".join([str(folder), model_key, variant]).encode()).hexdigest()[:16]
    return cache_root() / "indexes" / f"{folder.name or 'root'}-{digest}.idx"
