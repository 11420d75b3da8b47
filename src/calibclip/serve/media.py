"""Serving indexed images by id: safe path resolution and an on-disk thumbnail cache."""

from __future__ import annotations

import io
import mimetypes
from pathlib import Path

from calibclip.images import BadImage, open_image
from calibclip.atomic import atomic_write_bytes
from calibclip.serve.state import Snapshot


class ImageRefused(Exception):
    """The id is unknown or its file may not be served; ``status`` is the HTTP code to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resolve_image(snap: Snapshot, image_id: int) -> Path:
    """The real path of indexed image ``image_id``, refusing anything outside the indexed folder.

    Only ids are accepted (no path from the request ever reaches the file system). The stored path
    is resolved through every symlink, and the result must still lie inside the folder the index
    was built from; a symlink pointing elsewhere (e.g. ``photos/x.jpg -> /etc/passwd``) is refused.
    """
    path = snap.id_to_path.get(image_id)
    if path is None:
        raise ImageRefused(404, f"no image with id {image_id} in the index")
    if snap.folder is None:
        raise ImageRefused(403, "the index does not record its collection folder; rebuild it with "
                                "`calibclip index` to serve images")
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):  # missing file or symlink loop
        raise ImageRefused(404, f"image {image_id} is no longer on disk; run `calibclip index` and "
                                "POST /reload") from None
    if not real.is_file():
        raise ImageRefused(403, f"image {image_id} is not a regular file; refused")
    # Index-time rule (calibclip.index.embed.scan): links leaving the folder were indexed only with
    # --follow-symlinks, under their resolved target; such a target is served while it is still
    # the very file indexed (no symlink swapped in since).
    followed = snap.info.get("follow_symlinks") == "1" and str(real) == path
    if not real.is_relative_to(snap.folder) and not followed:
        raise ImageRefused(403, f"image {image_id} resolves outside the indexed folder; refused")
    return real


def media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def thumbnail(snap: Snapshot, image_id: int, size: int, quality: int) -> bytes:
    """JPEG thumbnail (longest side ``size``) of an indexed image, cached under ``<index>/thumbs``.

    The cache key holds the file's size and mtime, so a changed file gets a new thumbnail; the
    file is written to a temporary name and renamed, so a reader never sees half a JPEG. A
    read-only index folder just means no caching.
    """
    real = resolve_image(snap, image_id)
    st = real.stat()
    cache = snap.index.root / "thumbs" / f"{image_id}-{st.st_size}-{st.st_mtime_ns}-{size}.jpg"
    if cache.exists():
        return cache.read_bytes()
    try:
        img = open_image(real)
    except BadImage as exc:
        raise ImageRefused(415, str(exc)) from None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    data = buf.getvalue()
    try:
        atomic_write_bytes(cache, data)
    except OSError:
        pass  # cannot cache (read-only index): serve it anyway
    return data
