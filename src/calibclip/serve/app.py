"""FastAPI app of ``calibclip serve``: search API, image serving by id, and the static page.

Build it with ``create_app(index_path, encoder=...)`` (tests pass a tiny model; the CLI loads the
model the index was built with). Every error is a JSON object ``{"error": ..., "code": ...}`` with
a 4xx status; an unexpected failure is a 500 with no traceback in the body (it goes to the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.security import APIKeyHeader
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from calibclip.data.schema import unencodable
from calibclip.errors import UserError
from calibclip.images import BadImage, decode_image, open_image
from calibclip.serve.batching import TextBatcher
from calibclip.serve.config import ServeConfig
from calibclip.serve.media import ImageRefused, media_type, resolve_image, thumbnail
from calibclip.serve.security import (APIKeyMiddleware, BodyLimitMiddleware, HostCheckMiddleware,
                                     SecurityHeadersMiddleware)
from calibclip.serve.state import Searcher, Snapshot

log = logging.getLogger("calibclip.serve")
STATIC = Path(__file__).parent / "static"
# The page runs only its own files; images may come from blob: URLs (fetched with the key header).
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class TextQuery(BaseModel):
    """Body of ``POST /search/text``."""

    query: str = Field(..., description="What to look for, e.g. \"a red car on a beach\".")
    k: int = Field(24, description="Number of results.")
    calib: bool = Field(False, description="Use CalibCLIP (DCC query + discriminative re-ranking).")
    offset: int = Field(0, description="Skip this many best hits (paging: the next page starts at offset + k).")
    cutoff: str | None = Field(None, description="\"auto\" (or a z such as \"2.5\"): keep only the hits scoring "
                               "at least mean + z·std (auto: z = 2) of this query's scores over the gallery; "
                               "k stays the cap.")


class ApiError(Exception):
    """A 4xx answer with a machine-readable code."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def resolve_calibration(index_path: Path, calibration: Any) -> Any:
    """``"auto"`` → the CalibConfig the index was built with, else the default one; None → off.

    Returns None when ``calibclip.calib`` is not installed, so the toggle is simply unavailable.
    """
    if calibration != "auto":
        return calibration
    try:
        from calibclip.calib import CalibConfig
    except ImportError:
        return None
    from calibclip.index.store import EmbeddingStore
    import json

    store = EmbeddingStore(index_path)
    try:
        built = json.loads(store.get_info("calib", "null") or "null")
    finally:
        store.close()
    if built is None:
        return CalibConfig()
    if hasattr(CalibConfig, "from_dict"):
        return CalibConfig.from_dict(built)
    return CalibConfig(**built)


def _calib_usable(snap: Snapshot, cfg: Any) -> tuple[bool, str]:
    """Whether calib=true can work on this index, and why not (mirrors ``Index._check_calibration``)."""
    if cfg is None:
        return False, "calibclip.calib is not available on this server"
    built = snap.calibration
    want = cfg.to_dict()
    if built is None and want.get("cve", False):
        return False, "the index was built without --calib (no CVE features); rebuild it with --calib"
    if built is not None and built != want:
        return False, "the index was built with a different calibration config"
    return True, ""


def create_app(index_path: str | Path, encoder: Any = None, phi: Any = None, api_key: str | None = None,
               calibration: Any = "auto", config: ServeConfig | None = None, device: str = "auto") -> FastAPI:
    """The service over ``index_path``. The model is loaded here, once (the index's model when None)."""
    cfg = config or ServeConfig()
    if api_key is not None:
        cfg.api_key = api_key
    cfg.validate()
    index_path = Path(index_path)
    if encoder is None:
        from calibclip.backends.loading import load
        from calibclip.index import Index

        index = Index.open(index_path)
        encoder = load(index.model_to_load(), device=device)
        index.check_model(encoder)
        index.store.close()
    from calibclip.backends.loading import SHIPPED_MODEL_WARNING, is_shipped_model

    model_warning = SHIPPED_MODEL_WARNING if is_shipped_model(encoder) else None  # shown in the page header
    searcher = Searcher(index_path, encoder, calibration=resolve_calibration(index_path, calibration), phi=phi)

    batcher = TextBatcher(searcher, max_batch=cfg.max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        decoder.shutdown(wait=False, cancel_futures=True)
        batcher.close()
        searcher.close()

    # With a key, the schema declares it so the docs page offers "Authorize" (the key stays out of its URL).
    key_scheme = [Security(APIKeyHeader(name="X-API-Key", auto_error=False))] if cfg.api_key else None
    app = FastAPI(title="calibclip", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Text, image and composed image search over a calibclip index.",
                  dependencies=key_scheme)
    app.state.searcher = searcher
    app.state.batcher = batcher
    app.state.config = cfg
    _add_middleware(app, cfg)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    swagger = _swagger_assets()
    if swagger is not None:
        app.mount("/docs/assets", StaticFiles(directory=swagger), name="docs-assets")

    def hits_json(snap: Snapshot, hits: list) -> list[dict]:
        out = []
        for h in hits:
            p = Path(h.path)
            name = str(p.relative_to(snap.folder)) if snap.folder and p.is_relative_to(snap.folder) else p.name
            out.append({"rank": h.rank, "score": round(float(h.score), 6), "id": h.id, "name": name,
                        "url": f"/images/{h.id}", "thumb": f"/images/{h.id}?thumb=1"})
        return out

    def check_k(k: int, offset: int = 0) -> int:
        if not 1 <= k <= cfg.max_k:
            raise ApiError(400, f"k={k}: ask for between 1 and {cfg.max_k} results", "bad_k")
        if not 0 <= offset <= cfg.max_rank - k:
            raise ApiError(400, f"offset={offset}: pages reach at most rank {cfg.max_rank:,}; use 0 <= offset <= "
                                f"{cfg.max_rank - k:,} with k={k}", "bad_offset")
        return k

    def check_text(text: str, what: str) -> str:
        # checked here, before batching: a query the tokenizer cannot take must fail alone, as a 422
        bad = unencodable(text)
        if bad is not None:
            raise ApiError(422, f"{what} has an unpaired surrogate ({bad}); send valid Unicode text",
                           "invalid_text")
        if len(text) > cfg.max_query_chars:
            raise ApiError(400, f"{what} is {len(text):,} characters; the limit is {cfg.max_query_chars:,}",
                           "query_too_long")
        if not text.strip():
            raise ApiError(400, f"{what} is empty; give some words, e.g. \"a red car\"", "empty_query")
        return text

    # Uploads are decoded on a few dedicated threads: at most max_decodes large buffers exist at once,
    # and they come from the same threads' malloc arenas each time (decoding in 40 request threads
    # left each thread's arena holding its own ~50 MB after the request).
    decoder = ThreadPoolExecutor(cfg.max_decodes, thread_name_prefix="calibclip-decode")

    def read_upload(upload: UploadFile) -> Any:
        limit = int(cfg.max_upload_mb * 1024 * 1024)
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, f"image larger than {cfg.max_upload_mb:g} MB; upload a smaller one", "too_large")
        try:
            return decoder.submit(decode_image, data, upload.filename or "upload", max_pixels=cfg.max_upload_pixels,
                                  min_side=cfg.upload_min_side).result()
        except BadImage as exc:
            raise ApiError(400, str(exc), "bad_image") from None

    def reference(image: UploadFile | None, image_id: int | None) -> Any:
        """The query image: an upload, or an indexed image by id (exactly one of them)."""
        if (image is None) == (image_id is None):
            raise ApiError(400, "send exactly one of: an `image` file, or the `id` of an indexed image",
                           "bad_reference")
        if image is not None:
            return read_upload(image)
        try:
            return open_image(resolve_image(searcher.snapshot, image_id))
        except BadImage as exc:
            raise ApiError(400, str(exc), "bad_image") from None

    def answer(kind: str, snap_hits: tuple, warnings: list[str], t0: float, k: int, offset: int,
               **extra: Any) -> dict:
        """The JSON answer: hits ``offset+1 … offset+k`` (ranks count from the best hit overall)."""
        snap, raw = snap_hits
        page = raw[offset:offset + k]
        more = len(page) == k and offset + k < min(snap.size, cfg.max_rank)
        return {"kind": kind, **extra, "k": k, "offset": offset, "more": more, "hits": hits_json(snap, page),
                "warnings": warnings, "took_ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    @app.get("/health", tags=["service"])
    def health() -> dict:
        """Liveness: the model is loaded and an index is open."""
        return {"status": "ok", "images": searcher.snapshot.size}

    @app.get("/stats", tags=["service"])
    def stats() -> dict:
        """Index size, model, what the page may offer (calibration, composed search), counters."""
        snap = searcher.snapshot
        info = snap.info
        usable, why = _calib_usable(snap, searcher.calibration)
        return {"images": snap.size, "model": info.get("model"), "model_warning": model_warning,
                "dim": int(info.get("dim", 0) or 0),
                "dtype": info.get("dtype"), "index": str(searcher.index_path),
                "calibration": {"built": snap.calibration is not None, "usable": usable, "reason": why},
                "composed": {"enabled": searcher.phi is not None,
                             "reason": "" if searcher.phi is not None else "start the server with --phi PATH"},
                "requests": searcher.requests,
                "text_batches": {"batches": batcher.batches, "queries": batcher.queries}, "uptime_s": round(time.time() - searcher.started_at, 1),
                "opened_at": snap.opened_at,
                "limits": {"max_k": cfg.max_k, "max_rank": cfg.max_rank, "max_query_chars": cfg.max_query_chars,
                           "max_upload_mb": cfg.max_upload_mb, "default_k": cfg.default_k}}

    @app.post("/search/text", tags=["search"])
    async def search_text(body: TextQuery) -> dict:
        """Text → image search."""
        # async: the request waits on the batcher's future in the event loop, not in a pool thread
        # (32 parked threads contended for the GIL with the model's thread for nothing)
        t0 = time.perf_counter()
        query, k = check_text(body.query, "query"), check_k(body.k, body.offset)
        if body.cutoff is None:
            snap, hits, warns = await asyncio.wrap_future(batcher.submit(query, body.offset + k, calib=body.calib))
        else:  # the cut needs the query's own score statistics: one un-batched search, off the event loop
            (snap, hits), warns = await asyncio.to_thread(
                searcher.call, lambda s: (s, s.index.search(query, k=body.offset + k, cutoff=body.cutoff)),
                calib=body.calib)
        return answer("text", (snap, hits), warns, t0, k, body.offset, query=query, calib=body.calib,
                      cutoff=body.cutoff)

    @app.post("/search/image", tags=["search"])
    def search_image(image: UploadFile | None = File(None, description="Query image (or give `id`)."),
                     id: int | None = Form(None, description="Id of an indexed image: search similar."),
                     k: int = Form(24), offset: int = Form(0, description="Skip this many best hits.")) -> dict:
        """Image → image search: similar images to an upload or to an indexed image."""
        t0 = time.perf_counter()
        check_k(k, offset)
        depth = offset + k
        if id is not None and image is None:
            def by_id(s: Snapshot) -> tuple:
                if id not in s.id_to_pos:
                    raise ImageRefused(404, f"no image with id {id} in the index")
                return s, s.index.search_image(s.index.embeddings()[s.id_to_pos[id]], k=depth)

            result, warns = searcher.call(by_id)
        else:
            img = reference(image, id)
            result, warns = searcher.call(lambda s: (s, s.index.search_image(img, k=depth)))
        return answer("image", result, warns, t0, k, offset, id=id)

    @app.post("/search/composed", tags=["search"])
    def search_composed(text: str = Form(..., description="Modification text, e.g. \"is red\"."),
                        image: UploadFile | None = File(None, description="Reference image (or give `id`)."),
                        id: int | None = Form(None, description="Id of an indexed reference image."),
                        k: int = Form(24), calib: bool = Form(False),
                        offset: int = Form(0, description="Skip this many best hits."),
                        keep_reference: bool = Form(False, description="Keep the reference (given by `id`) "
                                                    "among the results; left out by default, as in the benchmarks.")
                        ) -> dict:
        """Composed search: a reference image changed as the text says (needs ``--phi``)."""
        t0 = time.perf_counter()
        if searcher.phi is None:
            raise ApiError(400, "composed search is off on this server: start it with `calibclip serve INDEX "
                                "--phi PATH` (a φ checkpoint)", "composed_disabled")
        text, k = check_text(text, "text"), check_k(k, offset)
        img = reference(image, id)
        result, warns = searcher.call(lambda s: (s, s.index.search_composed(
            img, text, searcher.phi, k=offset + k, prompt=cfg.prompt,
            exclude=() if id is None or keep_reference else (id,))), calib=calib)
        return answer("composed", result, warns, t0, k, offset, text=text, calib=calib, id=id)

    @app.get("/images/{image_id}", tags=["images"],
             responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
    def get_image(image_id: int, thumb: bool = Query(False, description="Small JPEG instead of the file.")):
        """An indexed image by id (never by path): the original file, or a cached thumbnail."""
        snap = searcher.snapshot
        headers = {"Cache-Control": "private, max-age=3600"}
        if thumb:
            return Response(thumbnail(snap, image_id, cfg.thumb_size, cfg.thumb_quality), media_type="image/jpeg",
                            headers=headers)
        real = resolve_image(snap, image_id)
        return FileResponse(real, media_type=media_type(real), headers=headers)

    @app.post("/reload", tags=["service"])
    def reload() -> dict:
        """Re-open the index after ``calibclip index`` changed it; searches keep running meanwhile."""
        old, new = searcher.reload()
        return {"status": "reloaded", "images": new.size, "before": old.size}

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI from local assets (works offline); the key is entered in its Authorize dialog."""
        if swagger is None:
            raise ApiError(404, "the API docs page needs fastapi-offline: pip install 'calibclip[serve]'",
                           "docs_unavailable")
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="calibclip API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon.png")

    return app


def _swagger_assets() -> Path | None:
    """Folder of the Swagger UI 5 files shipped by ``fastapi-offline``, or None when it is missing.

    Only its files are used (found without importing it): the docs route stays ours.
    """
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _version() -> str:
    from calibclip import __version__

    return __version__


def _add_middleware(app: FastAPI, cfg: ServeConfig) -> None:
    """Innermost first: body limit, API key, CORS (preflights carry no key), Host check, headers outermost."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    if cfg.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=cfg.api_key)
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Content-Type"])
    app.add_middleware(HostCheckMiddleware, allowed=cfg.allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware)


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure becomes ``{"error", "code"}`` JSON; never a traceback in a response."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.code)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return _error(400, str(exc), "bad_request")

    @app.exception_handler(ImageRefused)
    async def image_refused(request: Request, exc: ImageRefused) -> JSONResponse:
        codes = {403: "forbidden", 404: "not_found", 415: "bad_image"}
        return _error(exc.status, str(exc), codes.get(exc.status, "bad_request"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return JSONResponse({"error": str(exc.detail), "code": codes.get(exc.status_code, "http_error")},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc + message only: echoing the input could reflect a huge or hostile body back
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg', '')}"
                 for e in exc.errors()]
        return _error(422, "; ".join(parts) or "invalid request", "invalid_request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; see the server log", "internal")
