"""Helpers shared by the service tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

from PIL import Image

from calibclip.testing import write_random_images

N_IMAGES = 8
# The server answers only its own host names by default (DNS-rebinding protection): not "testserver".
BASE_URL = "http://127.0.0.1"


def write_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    """Seeded random PNGs img000.png … (distinct, so each is its own nearest neighbour)."""
    return write_random_images(folder, n, start, shape=(40, 52))


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
    return TestClient(create_app(index_path, encoder=encoder, **kwargs), raise_server_exceptions=raise_exc,
                      base_url=BASE_URL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread (with the CLI's protocol class)."""

    def __init__(self, app, header_timeout: float = 10.0) -> None:
        import uvicorn

        from calibclip.serve.server import with_header_timeout

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    http=with_header_timeout(header_timeout)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
