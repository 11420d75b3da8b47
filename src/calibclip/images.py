"""Safe image opening and collection listing.

Every image goes through ``open_image``: EXIF orientation applied, palette/RGBA/grey converted to
RGB, decompression bombs refused, truncated or non-image files turned into ``BadImage`` with a
one-line reason, so indexing can skip them and list them in a summary.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
# Refuse anything above ~100 megapixels (PIL's default warns at 89M and errors at 179M).
MAX_PIXELS = 100_000_000


class BadImage(Exception):
    """A file that cannot be used as an image; the message says why (one line)."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (P, RGBA, LA, L, CMYK, I;16) to RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent → white, like a viewer
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None) -> Image.Image:
    """Decode image bytes into an RGB PIL image, or raise BadImage with a short reason.

    ``min_side``: decode only as large as needed for the shorter side to stay >= ``min_side``
    (a JPEG is decoded at 1/2–1/8 scale by the codec, anything else is box-reduced right after
    decoding), and apply ``max_pixels`` to the pixels actually decoded. Query images use this: a
    38 Mpx photo costs what a 1 Mpx one does, and the embedding is the same up to resampling.
    """
    if not data:
        raise BadImage(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if min_side is not None:
                scale = min_side / max(1, min(img.size))
                if scale < 1:
                    img.draft("RGB", (max(1, round(img.width * scale)), max(1, round(img.height * scale))))
            if img.width * img.height > max_pixels:
                raise BadImage(f"{name}: {img.width}x{img.height} pixels exceeds the {max_pixels:,} pixel limit "
                               "(possible decompression bomb); refused" +
                               ("; send a JPEG or a smaller image" if min_side is not None else ""))
            img.load()
            if getattr(img, "is_animated", False):
                img.seek(0)  # first frame of an animated GIF/WebP
            if min_side is not None and min(img.size) >= 2 * min_side:
                img = _reduced(img, min(img.size) // min_side)
            return to_rgb(img)
    except BadImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise BadImage(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"{name}: corrupt or truncated image ({exc})") from None


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    """``img`` shrunk by an integer factor (box average), keeping its EXIF for ``to_rgb``."""
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA" if img.mode in ("P", "PA") and "transparency" in img.info or img.mode == "PA"
                          else "RGB")
    small = img.reduce(factor)
    small.info = {**img.info, **small.info}  # EXIF orientation must survive the resize
    return small


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as RGB (see ``decode_image``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, str(path), max_pixels)


def file_sha1(path: str | Path) -> str:
    """SHA-1 (hex) of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha1").hexdigest()


def iter_image_files(root: str | Path) -> Iterator[Path]:
    """All files with an image extension under ``root`` (recursive, sorted, symlinks not followed out)."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                yield Path(dirpath) / name
