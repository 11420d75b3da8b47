"""HTTP API of `calibclip serve` over an index built with the tiny model."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")

from serve_helpers import N_IMAGES, build_index, make_client, png_bytes, write_images  # noqa: E402

from calibclip.index import Index  # noqa: E402
from calibclip.serve import ServeConfig  # noqa: E402


def _ids_by_name(index_path) -> dict[str, int]:
    ids, _, paths = Index.open(index_path).matrix()
    return {os.path.basename(p): int(i) for i, p in zip(ids, paths)}


def _same_hits(got: list[dict], want: list[dict]) -> bool:
    """Same images in the same order; scores equal up to float rounding (batched encoding pads)."""
    return [h["id"] for h in got] == [h["id"] for h in want] and np.allclose(
        [h["score"] for h in got], [h["score"] for h in want], atol=1e-5)


def _assert_json_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] and "Traceback" not in body["error"]
    if code is not None:
        assert body["code"] == code
    return body


# ---- search ---------------------------------------------------------------------------------
def test_text_search_returns_the_index_ranking(client, shared_collection, tiny_encoder):
    expected = Index.open(shared_collection[1], tiny_encoder).search("a red car", k=5)
    body = client.post("/search/text", json={"query": "a red car", "k": 5}).json()
    assert [h["id"] for h in body["hits"]] == [h.id for h in expected]
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([h["score"] for h in body["hits"]], [h.score for h in expected], atol=1e-5)
    first = body["hits"][0]
    assert first["name"] == os.path.basename(expected[0].path)  # relative name, not the absolute path
    assert first["url"] == f"/images/{first['id']}" and first["thumb"] == f"/images/{first['id']}?thumb=1"
    assert body["kind"] == "text" and body["calib"] is False


def test_text_search_k_larger_than_collection_returns_everything(client):
    body = client.post("/search/text", json={"query": "a dog", "k": 50}).json()
    assert sorted(h["id"] for h in body["hits"]) == list(range(1, N_IMAGES + 1))
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("payload, code", [
    ({"query": "   ", "k": 3}, "empty_query"),
    ({"query": "x" * 1001, "k": 3}, "query_too_long"),
    ({"query": "a cat", "k": 0}, "bad_k"),
    ({"query": "a cat", "k": 201}, "bad_k"),
])
def test_text_search_rejects_bad_queries(client, payload, code):
    _assert_json_error(client.post("/search/text", json=payload), 400, code)


@pytest.mark.parametrize("route", ["text", "image"])
def test_offset_pages_through_the_ranking(client, route):
    def ask(k: int, offset: int) -> dict:
        if route == "text":
            return client.post("/search/text", json={"query": "a red car", "k": k, "offset": offset}).json()
        return client.post("/search/image", data={"id": "3", "k": str(k), "offset": str(offset)}).json()

    full = ask(N_IMAGES, 0)
    pages = [ask(3, off) for off in (0, 3, 6)]
    assert [h["id"] for p in pages for h in p["hits"]] == [h["id"] for h in full["hits"]]
    assert [h["rank"] for p in pages for h in p["hits"]] == list(range(1, N_IMAGES + 1))
    assert [(p["offset"], p["k"], p["more"]) for p in pages] == [(0, 3, True), (3, 3, True), (6, 3, False)]
    assert full["more"] is False and ask(3, N_IMAGES)["hits"] == []


@pytest.mark.parametrize("offset", [-1, 998])
def test_bad_offset_is_a_400(client, offset):
    body = _assert_json_error(client.post("/search/text", json={"query": "a cat", "k": 3, "offset": offset}), 400,
                              "bad_offset")
    assert "offset" in body["error"]


def test_malformed_bodies_get_422_json(client):
    _assert_json_error(client.post("/search/text", json={"k": 3}), 422, "invalid_request")
    _assert_json_error(client.post("/search/text", json={"query": "a", "k": "many"}), 422, "invalid_request")
    resp = client.post("/search/text", content=b"{not json", headers={"content-type": "application/json"})
    _assert_json_error(resp, 422, "invalid_request")


def test_image_search_by_upload_finds_the_same_image(client, shared_collection):
    folder, index_path = shared_collection
    target = _ids_by_name(index_path)["img003.png"]
    files = {"image": ("q.png", (folder / "img003.png").read_bytes(), "image/png")}
    body = client.post("/search/image", files=files, data={"k": "3"}).json()
    assert body["hits"][0]["id"] == target
    assert body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(body["hits"]) == 3


def test_search_similar_by_id_uses_the_stored_embedding(client, shared_collection, tiny_encoder):
    index = Index.open(shared_collection[1], tiny_encoder)
    ids, emb, _ = index.matrix()
    pos = 5
    expected = np.argsort(-(emb @ emb[pos]), kind="stable")[:4]
    body = client.post("/search/image", data={"id": str(ids[pos]), "k": "4"}).json()
    assert [h["id"] for h in body["hits"]] == [int(ids[i]) for i in expected]
    assert body["hits"][0]["id"] == int(ids[pos])


def test_image_search_reference_errors(client):
    _assert_json_error(client.post("/search/image", data={"id": "999", "k": "3"}), 404, "not_found")
    _assert_json_error(client.post("/search/image", data={"k": "3"}), 400, "bad_reference")
    both = client.post("/search/image", files={"image": ("q.png", png_bytes(), "image/png")}, data={"id": "1"})
    _assert_json_error(both, 400, "bad_reference")


@pytest.mark.parametrize("data", [b"", b"this is not an image", png_bytes()[:40]])
def test_bad_uploaded_image_is_a_400(client, data):
    resp = client.post("/search/image", files={"image": ("bad.png", data, "image/png")})
    _assert_json_error(resp, 400, "bad_image")


def test_decompression_bomb_refused_before_decoding(shared_collection, tiny_encoder):
    # A 30x20 PNG is "too many pixels" under a 500-pixel cap: the guard reads the header only.
    c = make_client(shared_collection[1], tiny_encoder, config=ServeConfig(max_upload_pixels=500))
    body = _assert_json_error(c.post("/search/image", files={"image": ("b.png", png_bytes((30, 20)), "image/png")}),
                              400, "bad_image")
    assert "pixel limit" in body["error"]
    assert c.post("/search/image", files={"image": ("s.png", png_bytes((20, 20)), "image/png")}).status_code == 200


def test_real_bomb_header_is_refused(client):
    """A PNG whose header claims 60000x60000 pixels (3.6 Gpx) is refused without allocating it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    body = _assert_json_error(client.post("/search/image", files={"image": ("bomb.png", bomb, "image/png")}), 400,
                              "bad_image")
    assert "bomb" in body["error"] or "pixel" in body["error"]


def test_upload_size_limit(shared_collection, tiny_encoder):
    cfg = ServeConfig(max_upload_mb=0.05, form_overhead_bytes=1024)  # 51,200-byte files, 52,224-byte bodies
    c = make_client(shared_collection[1], tiny_encoder, config=cfg)
    big = os.urandom(60_000)
    _assert_json_error(c.post("/search/image", files={"image": ("big.png", big, "image/png")}), 413, "too_large")

    def chunks():  # no Content-Length: the body is counted as it streams in
        for _ in range(10):
            yield b"x" * 10_000

    resp = c.post("/search/image", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    _assert_json_error(resp, 413, "too_large")
    ok = c.post("/search/image", files={"image": ("small.png", png_bytes(), "image/png")}, data={"k": "2"})
    assert ok.status_code == 200 and len(ok.json()["hits"]) == 2


# ---- composed ---------------------------------------------------------------------------------
def test_composed_without_phi_is_a_clear_4xx(client):
    resp = client.post("/search/composed", files={"image": ("r.png", png_bytes(), "image/png")},
                       data={"text": "is blue"})
    body = _assert_json_error(resp, 400, "composed_disabled")
    assert "--phi" in body["error"]
    assert client.get("/stats").json()["composed"]["enabled"] is False


def test_composed_passes_image_text_phi_and_k_to_the_index(shared_collection, tiny_encoder, monkeypatch):
    seen = {}
    phi = object()

    def fake_composed(self, image, text, phi_, k=10, prompt="", **kw):
        seen.update(size=image.size, mode=image.mode, text=text, phi=phi_, k=k, prompt=prompt)
        return self.search_image(image, k=k)

    monkeypatch.setattr(Index, "search_composed", fake_composed)
    c = make_client(shared_collection[1], tiny_encoder, phi=phi)
    assert c.get("/stats").json()["composed"]["enabled"] is True
    resp = c.post("/search/composed", files={"image": ("r.png", png_bytes((30, 20)), "image/png")},
                  data={"text": "is blue", "k": "3"})
    assert resp.status_code == 200, resp.text
    assert seen == {"size": (30, 20), "mode": "RGB", "text": "is blue", "phi": phi, "k": 3,
                    "prompt": "a photo of $ that {}"}
    assert len(resp.json()["hits"]) == 3
    # an indexed image as the reference: the server opens it by id
    ids = _ids_by_name(shared_collection[1])
    resp = c.post("/search/composed", data={"text": "is blue", "k": "2", "id": str(ids["img002.png"])})
    assert resp.status_code == 200 and seen["size"] == (52, 40)
    _assert_json_error(c.post("/search/composed", data={"text": "  ", "id": "1"}), 400, "empty_query")


# ---- calibration toggle -----------------------------------------------------------------------
def test_calib_toggle_unavailable_is_a_400_and_leaves_the_encoder_alone(shared_collection, tiny_encoder):
    c = make_client(shared_collection[1], tiny_encoder, calibration=None)
    assert c.get("/stats").json()["calibration"]["usable"] is False
    body = _assert_json_error(c.post("/search/text", json={"query": "a cat", "calib": True}), 400)
    assert "calib" in body["error"].lower()
    assert tiny_encoder.calibration is None


def test_calib_toggle_matches_calibrated_index_search(tmp_path, tiny_model_dir):
    calib = pytest.importorskip("calibclip.calib")
    if not hasattr(calib, "CalibConfig"):
        pytest.skip("calibclip.calib has no CalibConfig yet")
    import calibclip

    enc = calibclip.load(str(tiny_model_dir), device="cpu")
    enc.calibration = calib.CalibConfig()
    write_images(tmp_path / "photos", 6)
    index = build_index(tmp_path / "photos", enc, tmp_path / "c.idx")
    calibrated = [h.id for h in index.search("a red car", k=6)]
    enc.calibration = None
    plain = [h.id for h in Index.open(tmp_path / "c.idx", enc).search("a red car", k=6)]
    c = make_client(tmp_path / "c.idx", enc, calibration=calib.CalibConfig())
    assert c.get("/stats").json()["calibration"]["usable"] is True
    on = c.post("/search/text", json={"query": "a red car", "k": 6, "calib": True}).json()
    off = c.post("/search/text", json={"query": "a red car", "k": 6, "calib": False}).json()
    assert [h["id"] for h in on["hits"]] == calibrated
    assert [h["id"] for h in off["hits"]] == plain
    assert enc.calibration is None


# ---- images -----------------------------------------------------------------------------------
def test_original_image_is_the_file_bytes(client, shared_collection):
    folder, index_path = shared_collection
    image_id = _ids_by_name(index_path)["img004.png"]
    resp = client.get(f"/images/{image_id}")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.content == (folder / "img004.png").read_bytes()


def test_thumbnail_is_a_cached_jpeg(collection, tiny_encoder):
    folder, index_path = collection
    Image.new("RGB", (600, 300), (10, 200, 10)).save(folder / "img001.png")  # large, so it gets shrunk
    build_index(folder, tiny_encoder, index_path)
    c = make_client(index_path, tiny_encoder, config=ServeConfig(thumb_size=128))
    image_id = _ids_by_name(index_path)["img001.png"]
    resp = c.get(f"/images/{image_id}?thumb=1")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(resp.content))
    assert thumb.format == "JPEG" and thumb.size == (128, 64)
    assert np.abs(np.asarray(thumb, dtype=float).mean(axis=(0, 1)) - (10, 200, 10)).max() < 8
    cached = list((index_path / "thumbs").glob(f"{image_id}-*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == resp.content
    assert not list((index_path / "thumbs").glob(".tmp-*"))  # written atomically, nothing left over
    cached[0].write_bytes(b"from-cache")  # the second request must come from the disk cache
    assert c.get(f"/images/{image_id}?thumb=1").content == b"from-cache"


@pytest.mark.parametrize("url, status", [
    ("/images/999", 404),
    ("/images/0", 404),
    ("/images/-1", 404),
    ("/images/abc", 422),
    ("/images/..%2F..%2Fetc%2Fpasswd", 404),
    ("/images/1/../../../etc/passwd", 404),
    ("/images/%2e%2e/%2e%2e/etc/passwd", 404),
])
def test_images_only_by_integer_id(client, url, status):
    resp = client.get(url)
    assert resp.status_code == status, (url, resp.status_code)
    assert b"root:" not in resp.content
    assert resp.headers["content-type"].startswith("application/json")


def test_symlink_escaping_the_collection_is_refused(collection, tiny_encoder, tmp_path):
    folder, index_path = collection
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(color=(1, 2, 3)))
    ids = _ids_by_name(index_path)
    c = make_client(index_path, tiny_encoder)
    # swap an indexed file for a symlink to a file outside the collection
    (folder / "img002.png").unlink()
    (folder / "img002.png").symlink_to(secret)
    for url in (f"/images/{ids['img002.png']}", f"/images/{ids['img002.png']}?thumb=1"):
        body = _assert_json_error(c.get(url), 403, "forbidden")
        assert "outside" in body["error"]
    # "search similar" by id uses the stored embedding, never the file, so it still works
    assert c.post("/search/image", data={"id": str(ids["img002.png"]), "k": "1"}).json()["hits"][0]["id"] == \
        ids["img002.png"]
    # a symlink that stays inside the collection is fine
    (folder / "img003.png").unlink()
    (folder / "img003.png").symlink_to(folder / "img004.png")
    resp = c.get(f"/images/{ids['img003.png']}")
    assert resp.status_code == 200 and resp.content == (folder / "img004.png").read_bytes()
    # a deleted file is a 404, not a 500
    (folder / "img005.png").unlink()
    _assert_json_error(c.get(f"/images/{ids['img005.png']}"), 404, "not_found")


def test_directory_swapped_for_a_symlink_outside_is_refused(collection, tiny_encoder, tmp_path):
    folder, index_path = collection
    write_images(folder / "sub", 1, start=50)
    build_index(folder, tiny_encoder, index_path)
    image_id = _ids_by_name(index_path)["img050.png"]
    c = make_client(index_path, tiny_encoder)
    assert c.get(f"/images/{image_id}").status_code == 200
    # after indexing, sub/ becomes a link to another folder holding a file of the same name
    outside = tmp_path / "outside"
    write_images(outside, 1, start=50)
    (folder / "sub" / "img050.png").unlink()
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    _assert_json_error(c.get(f"/images/{image_id}"), 403, "forbidden")
    # nor can it be used as a composed-search reference (the file would be read server-side)
    with_phi = make_client(index_path, tiny_encoder, phi=object())
    _assert_json_error(with_phi.post("/search/composed", data={"id": str(image_id), "text": "red"}), 403,
                       "forbidden")


# ---- auth, CORS, errors -----------------------------------------------------------------------
def test_api_key_required_on_every_data_route(shared_collection, tiny_encoder):
    c = make_client(shared_collection[1], tiny_encoder, api_key="s3cret")
    routes = [("get", "/health", {}), ("get", "/stats", {}), ("get", "/images/1", {}),
              ("get", "/images/1?thumb=1", {}), ("post", "/reload", {}),
              ("post", "/search/text", {"json": {"query": "a cat"}}),
              ("post", "/search/image", {"data": {"id": "1"}}),
              ("post", "/search/composed", {"data": {"id": "1", "text": "red"}})]
    for method, url, kw in routes:
        _assert_json_error(getattr(c, method)(url, **kw), 401, "unauthorized")
        _assert_json_error(getattr(c, method)(url, headers={"X-API-Key": "wrong"}, **kw), 401, "unauthorized")
        ok = getattr(c, method)(url, headers={"X-API-Key": "s3cret"}, **kw)
        assert ok.status_code != 401, url
    sep = lambda u: "&" if "?" in u else "?"  # noqa: E731
    assert c.get("/stats?api_key=s3cret").status_code == 200
    assert c.get("/images/1" + sep("/images/1") + "api_key=s3cret").status_code == 200
    # the page shell, the API docs and their assets hold no data: they load so they can ask for the key
    assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
    docs = c.get("/docs")
    assert docs.status_code == 200 and "s3cret" not in docs.text  # #16.12: the key is never in the page
    spec = c.get("/openapi.json").json()  # the docs' "Authorize" dialog takes the key as X-API-Key
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {"type": "apiKey", "in": "header",
                                                                      "name": "X-API-Key"}


def test_no_key_configured_means_open(client):
    assert client.get("/health").json() == {"status": "ok", "images": N_IMAGES}


def test_cors_off_by_default_and_on_when_asked(client, shared_collection, tiny_encoder):
    pre = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/search/text", headers=pre).headers
    assert "access-control-allow-origin" not in client.get("/stats", headers={"Origin": "http://evil.example"}).headers
    c = make_client(shared_collection[1], tiny_encoder, api_key="k",
                    config=ServeConfig(cors_origins=("http://app.example",)))
    resp = c.options("/search/text", headers={**pre, "Origin": "http://app.example",
                                              "Access-Control-Request-Headers": "x-api-key"})
    assert resp.status_code == 200  # preflight answered before the key check
    assert resp.headers["access-control-allow-origin"] == "http://app.example"
    assert "access-control-allow-origin" not in c.options("/search/text", headers=pre).headers


def test_unexpected_errors_are_json_500_without_traceback(shared_collection, tiny_encoder, monkeypatch):
    def boom(self, *a, **kw):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Index, "search", boom)
    c = make_client(shared_collection[1], tiny_encoder, raise_server_exceptions=False)
    resp = c.post("/search/text", json={"query": "a cat"})
    _assert_json_error(resp, 500, "internal")
    assert "secret internal detail" not in resp.text


def test_unknown_route_and_method_are_json(client):
    _assert_json_error(client.get("/nope"), 404, "not_found")
    _assert_json_error(client.get("/search/text"), 405, "method_not_allowed")


def test_page_and_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for resp in (page, client.get("/health"), client.get("/images/999")):
        assert resp.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/search/text", "/search/image", "/search/composed", "/images/{image_id}", "/health", "/stats",
            "/reload"} <= set(spec["paths"])
    assert "swagger" in client.get("/docs").text.lower()


# ---- stats and reload -------------------------------------------------------------------------
def test_stats_reports_the_index(client, shared_collection):
    s = client.get("/stats").json()
    assert s["images"] == N_IMAGES and s["dim"] == 16 and s["model"]
    assert s["limits"]["max_upload_mb"] == 10.0


def test_reload_sees_new_images_without_downtime(collection, tiny_encoder):
    folder, index_path = collection
    c = make_client(index_path, tiny_encoder)
    before = c.post("/search/text", json={"query": "a boat", "k": 50}).json()["hits"]
    write_images(folder, 3, start=20)
    build_index(folder, tiny_encoder, index_path)  # `calibclip index` run while the server is up
    # until reload the server keeps answering from the old state
    assert c.post("/search/text", json={"query": "a boat", "k": 50}).json()["hits"] == before
    assert c.get("/stats").json()["images"] == N_IMAGES
    assert c.post("/reload").json() == {"status": "reloaded", "images": N_IMAGES + 3, "before": N_IMAGES}
    assert c.get("/stats").json()["images"] == N_IMAGES + 3
    new_id = _ids_by_name(index_path)["img021.png"]
    files = {"image": ("q.png", (folder / "img021.png").read_bytes(), "image/png")}
    assert c.post("/search/image", files=files, data={"k": "1"}).json()["hits"][0]["id"] == new_id
    assert c.get(f"/images/{new_id}").content == (folder / "img021.png").read_bytes()


def test_concurrent_searches_and_reloads_agree_with_serial_results(collection, tiny_encoder):
    folder, index_path = collection
    c = make_client(index_path, tiny_encoder)
    queries = ["a red car", "a dog on grass", "two cats", "a city at night"]
    expected = {q: c.post("/search/text", json={"query": q, "k": 5}).json()["hits"] for q in queries}
    errors: list[str] = []

    def worker(q: str) -> None:
        for _ in range(6):
            r = c.post("/search/text", json={"query": q, "k": 5})
            if r.status_code != 200 or not _same_hits(r.json()["hits"], expected[q]):
                errors.append(f"{q}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for _ in range(3):
        assert c.post("/reload").status_code == 200
    for t in threads:
        t.join()
    assert errors == []
