"""Hostile or unlucky input to `calibclip serve`: one bad request never fails another one (#16.9–12)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from serve_helpers import make_client  # noqa: E402

from calibclip.index import Index  # noqa: E402
from calibclip.serve.batching import TextBatcher  # noqa: E402
from calibclip.serve.state import Searcher  # noqa: E402

BAD_BODY = b'{"query": "a\\ud800", "k": 3}'  # valid JSON, but a lone surrogate no tokenizer can take


def test_lone_surrogate_is_a_422_naming_the_field(client):
    resp = client.post("/search/text", content=BAD_BODY, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["code"] == "invalid_text" and "query" in body["error"] and "position 1" in body["error"]


def test_bad_query_among_concurrent_ones_fails_alone(client, shared_collection, tiny_encoder):
    """30 valid queries and 3 bad ones at once: every valid one gets its own ranking, the bad ones 422."""
    index = Index.open(shared_collection[1], tiny_encoder)
    words = ["a red car", "a dog", "two cats", "a boat", "a tree", "the sea"]
    expected = {q: [h.id for h in index.search(q, k=4)] for q in words}

    def ask(i: int):
        if i % 11 == 5:
            return None, client.post("/search/text", content=BAD_BODY, headers={"content-type": "application/json"})
        q = words[i % len(words)]
        return q, client.post("/search/text", json={"query": q, "k": 4})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(33)))
    bad = [r for q, r in answers if q is None]
    assert [r.status_code for r in bad] == [422] * 3
    for q, r in answers:
        if q is not None:
            assert r.status_code == 200, r.text
            assert [h["id"] for h in r.json()["hits"]] == expected[q]


def test_failing_query_inside_a_batch_is_retried_alone(shared_collection, tiny_encoder, monkeypatch):
    """A query that slips past validation and breaks its batch fails only its own caller."""
    calls: list[list[str]] = []
    gate = threading.Event()
    original = Index.search

    def gated(self, query, k=10):
        queries = [query] if isinstance(query, str) else list(query)
        calls.append(queries)
        if len(calls) == 1:
            gate.wait(20)  # hold the model so the others queue into one batch
        if "BOOM" in queries:
            raise RuntimeError("tokenizer exploded")
        return original(self, query, k=k)

    monkeypatch.setattr(Index, "search", gated)
    batcher = TextBatcher(Searcher(shared_collection[1], tiny_encoder))
    results: dict[str, object] = {}

    def ask(q: str) -> None:
        try:
            results[q] = batcher.search(q, 3)[1]
        except RuntimeError as exc:
            results[q] = exc

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    deadline = threading.Event()
    while not calls and not deadline.wait(0.005):
        pass
    others = [threading.Thread(target=ask, args=(q,)) for q in ("a red car", "BOOM", "a dog")]
    for t in others:
        t.start()
    while batcher.queue.qsize() < 3 and not deadline.wait(0.005):
        pass
    gate.set()
    for t in [first, *others]:
        t.join(timeout=30)
    batcher.close()

    assert isinstance(results["BOOM"], RuntimeError)
    direct = Index.open(shared_collection[1], tiny_encoder)
    for q in ("a red car", "a dog", "first"):
        assert [h.id for h in results[q]] == [h.id for h in original(direct, q, k=3)]
    # one batch of three failed, then each of the three alone
    assert sorted(len(c) for c in calls[1:]) == [1, 1, 1, 3]


# ---- Host header (DNS rebinding) --------------------------------------------------------------
@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:8000", 200), ("localhost", 200), ("LOCALHOST.:80", 200), ("[::1]:8000", 200),
    ("attacker.example", 400), ("attacker.example:8000", 400), ("127.0.0.1.attacker.example", 400), ("", 400),
])
def test_only_the_bound_host_names_are_answered(client, host, status):
    resp = client.get("/health", headers={"host": host})
    assert resp.status_code == status, resp.text
    if status == 400:
        assert resp.json()["code"] == "bad_host" and "--allowed-host" in resp.json()["error"]


def test_allowed_hosts_are_configurable(shared_collection, tiny_encoder):
    from calibclip.serve import ServeConfig

    c = make_client(shared_collection[1], tiny_encoder, config=ServeConfig(allowed_hosts=("photos.lan",)))
    assert c.get("/health", headers={"host": "photos.lan:8000"}).status_code == 200
    assert c.get("/health", headers={"host": "127.0.0.1"}).status_code == 400
    anyhost = make_client(shared_collection[1], tiny_encoder, config=ServeConfig(allowed_hosts=("*",)))
    assert anyhost.get("/health", headers={"host": "attacker.example"}).status_code == 200


def test_default_allowed_hosts_per_bind_address():
    import socket

    from calibclip.serve.security import default_allowed_hosts

    assert default_allowed_hosts("127.0.0.1") == ("127.0.0.1", "::1", "localhost")
    assert "192.168.1.20" in default_allowed_hosts("192.168.1.20")
    assert socket.gethostname().lower() in default_allowed_hosts("0.0.0.0")


# ---- API key, /docs ---------------------------------------------------------------------------
def test_non_ascii_api_key_is_refused(shared_collection, tiny_encoder):
    from calibclip.errors import UserError
    from calibclip.serve import ServeConfig, create_app

    with pytest.raises(UserError, match="ASCII"):
        create_app(shared_collection[1], encoder=tiny_encoder, api_key="clé")
    with pytest.raises(UserError, match="ASCII"):
        ServeConfig(api_key="ключ")


def test_docs_work_offline_from_local_assets(shared_collection, tiny_encoder):
    import re

    c = make_client(shared_collection[1], tiny_encoder, api_key="s3cret")
    html = c.get("/docs").text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
    assert urls and all(u.startswith("/") for u in urls), urls  # nothing from a CDN
    assert "s3cret" not in html and "api_key" not in html
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        resp = c.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 10_000, asset


# ---- slow clients -----------------------------------------------------------------------------
def test_slow_headers_are_cut_off(shared_collection, tiny_encoder):
    """A client trickling its request line and headers is disconnected after the header timeout."""
    import socket
    import time

    from serve_helpers import LiveServer

    from calibclip.serve import create_app

    app = create_app(shared_collection[1], encoder=tiny_encoder)
    with LiveServer(app, header_timeout=0.6) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a normal client is served
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            t0 = time.monotonic()
            closed = False
            for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                sock.settimeout(0.05)
                try:
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            elapsed = time.monotonic() - t0
        assert closed and 0.5 < elapsed < 3.0, elapsed


# ---- uploads: memory ----------------------------------------------------------------------------
def _encoded(size: tuple[int, int], fmt: str) -> bytes:
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (30, 90, 160))
    ImageDraw.Draw(img).ellipse((size[0] // 5, size[1] // 5, size[0] // 2, size[1] // 2), fill=(220, 180, 40))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_large_jpeg_upload_is_decoded_downscaled(client, monkeypatch):
    seen = []
    original = Index.search_image

    def spy(self, image, k=10):
        seen.append(image.size)
        return original(self, image, k=k)

    monkeypatch.setattr(Index, "search_image", spy)
    data = _encoded((6000, 4000), "JPEG")  # 24 Mpx: decoded at 1/8 scale by the codec
    resp = client.post("/search/image", files={"image": ("big.jpg", data, "image/jpeg")}, data={"k": "3"})
    assert resp.status_code == 200, resp.text
    assert seen == [(750, 500)]


def test_decoded_pixel_cap_refuses_a_huge_png(client):
    data = _encoded((7100, 5400), "PNG")  # 38 Mpx in ~100 KB: a PNG cannot be decoded at a smaller scale
    assert len(data) < 1_000_000
    resp = client.post("/search/image", files={"image": ("big.png", data, "image/png")}, data={"k": "3"})
    assert resp.status_code == 400 and resp.json()["code"] == "bad_image"
    assert "7100x5400" in resp.json()["error"] and "16,000,000" in resp.json()["error"]


def test_downscaled_decode_keeps_orientation_and_short_side():
    import io

    from PIL import Image

    from calibclip.images import decode_image

    img = Image.new("RGB", (3000, 2000), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    out = decode_image(buf.getvalue(), "x.png", min_side=448)
    assert out.size == (500, 750) and out.mode == "RGB"  # reduced by 2000 // 448 = 4, then turned upright
    small = decode_image(_encoded((400, 300), "PNG"), "s.png", min_side=448)
    assert small.size == (400, 300)  # never upscaled, never reduced below the short side


def test_concurrent_decodes_are_bounded(shared_collection, tiny_encoder, monkeypatch):
    import time

    import calibclip.serve.app as app_module

    active, peak = [0], [0]
    lock = threading.Lock()
    original = app_module.decode_image

    def slow_decode(*a, **kw):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.15)
        try:
            return original(*a, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(app_module, "decode_image", slow_decode)  # looked up at call time
    c = make_client(shared_collection[1], tiny_encoder)
    data = _encoded((64, 48), "PNG")
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: c.post("/search/image", files={"image": ("a.png", data, "image/png")},
                                               data={"k": "2"}).status_code, range(8)))
    assert codes == [200] * 8 and peak[0] == 2
