"""Shared helpers of the readers: finding annotation files, loading JSON, checking images, fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from calibclip.errors import UserError


def find_file(root: Path, name: str, subdirs: Sequence[str], what: str) -> Path:
    """``root/<subdir>/name`` for the first subdir where it exists, else a UserError naming what is expected."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"--root {root}: no such folder; expected the {what} folder.")
    if root.is_file() and root.name == name:
        return root
    tried = [root / d / name if d else root / name for d in subdirs]
    for p in tried:
        if p.is_file():
            return p
    shown = ", ".join(str(p) for p in tried)
    raise UserError(f"--root {root}: {name} not found (looked for {shown}); point --root at the {what} folder.")


def load_json(path: Path, kind: type | tuple[type, ...], what: str) -> Any:
    """Parse a JSON file that must hold a ``kind`` (list or dict); UserError naming the file otherwise."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror}).") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start}); expected {what} as UTF-8 JSON.") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); expected {what}.") from None
    if not isinstance(obj, kind):
        raise UserError(f"{path}: expected {what}, found a JSON {type(obj).__name__}.")
    return obj


def pick_base(candidates: Iterable[Path], probe: str, source: Path, what: str) -> Path:
    """The first candidate folder that contains ``probe`` (a relative image path) — where the images live."""
    candidates = list(dict.fromkeys(Path(c) for c in candidates))
    for c in candidates:
        if (c / probe).is_file():
            return c
    shown = ", ".join(str(c) for c in candidates)
    raise UserError(f"{source}: image '{probe}' listed there was not found under any of {shown}; "
                    f"expected the {what} next to the annotations.")


def check_images(paths: Sequence[Path], source: Path) -> None:
    """Every listed image exists, else one UserError with the count and the first missing file."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UserError(f"{source}: {len(missing)} of {len(paths)} images it lists are missing "
                        f"(first: {missing[0]}); check the dataset download is complete.")


def need_split(split: str, allowed: Sequence[str], dataset: str) -> str:
    """Validate ``--split`` for a dataset."""
    if split not in allowed:
        raise UserError(f"--split {split}: {dataset} has splits {', '.join(allowed)}.")
    return split


def fingerprint(files: Sequence[Path], image_paths: Sequence[Path]) -> str:
    """SHA-1 (16 hex) of the annotation files' bytes and the gallery's relative paths and sizes.

    Changes when an annotation or any gallery image (size) changes; reading every image would be too slow.
    """
    h = hashlib.sha1()
    # Paths relative to the gallery's common folder: moving the dataset keeps its fingerprint.
    base = Path(os.path.commonpath([str(p) for p in image_paths])) if len(image_paths) > 1 else None
    for f in files:
        h.update(Path(f).name.encode() + b"\0" + Path(f).read_bytes())
    for p in image_paths:
        p = Path(p)
        rel = str(p.relative_to(base)) if base is not None else p.name
        h.update(f"{rel}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]
