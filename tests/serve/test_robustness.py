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
