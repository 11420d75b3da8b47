"""Atomic file writes: a temporary file in the target's folder, fsync, then rename over the target.

Readers see the old file or the new one, never half of one, and an interrupted write leaves no
file under the target name. Bottom of the import graph (imports nothing of ours). Files are
created with the permissions the process's umask gives (``tempfile.mkstemp`` alone would make
them 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc/self/status).

    ``os.umask`` can only be read by setting it, which races with other threads creating files;
    it is the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions a new regular file gets under the current umask (0o644 with umask 022)."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], suffix: str = "") -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=suffix)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, array: Any) -> Path:
    """np.save ``array`` to ``path`` atomically."""
    import numpy as np

    return atomic_write(path, lambda fh: np.save(fh, array), suffix=".npy")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save ``obj`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), suffix=".pt")
