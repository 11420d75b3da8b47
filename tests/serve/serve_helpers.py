"""Helpers shared by the service tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

N_IMAGES = 8


def write_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    """Seeded random PNGs img000.png … (distinct, so each is its own nearest neighbour)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        rng = np.random.RandomState(i)
        path = folder / f"img{i:03d}.png"
        Image.fromarray((rng.rand(40, 52, 3) * 255).astype("uint8")).save(path)
        out.append(path)
    return out


def png_bytes(size: tuple[int, int] = (30, 20), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def build_index(folder: Path, encoder, out: Path):
    from calibclip.index import Index

    return Index.build(folder, encoder, out=out, batch_size=4, num_workers=0, dtype="float32", progress=False)



def make_client(index_path, encoder, **kwargs):
    from fastapi.testclient import TestClient

    from calibclip.serve import create_app

    raise_exc = kwargs.pop("raise_server_exceptions", True)
    return TestClient(create_app(index_path, encoder=encoder, **kwargs), raise_server_exceptions=raise_exc)
