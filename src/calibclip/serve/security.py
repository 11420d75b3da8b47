"""ASGI middlewares: Host check, API key on every data route, and a hard cap on request body size."""

from __future__ import annotations

import hmac
import json
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException

from calibclip.serve.config import LOOPBACK_NAMES

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The page shell, the API docs and their assets hold no data and must load before the user can
# type the key (the docs page takes the key in its "Authorize" dialog, never in its URL).
PUBLIC_PATHS = frozenset({"/", "/favicon.ico", "/docs", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/", "/docs/assets/")
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


async def send_json(send: Send, status: int, body: dict) -> None:
    """Answer an HTTP request with a JSON error from inside a middleware."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def request_key(scope: Scope) -> str | None:
    """The key a request carries: header ``X-API-Key`` or query parameter ``api_key``."""
    for name, value in scope.get("headers", []):
        if name == b"x-api-key":
            return value.decode("latin-1")
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return qs.get("api_key", [None])[0]


def default_allowed_hosts(bind: str) -> tuple[str, ...]:
    """Host names a server bound to ``bind`` answers to by default (DNS-rebinding protection).

    Loopback → the loopback names; a specific address or name → that one (and loopback); a
    wildcard bind (0.0.0.0, ::) → loopback plus this machine's host name, FQDN and the addresses
    they resolve to. Any other name needs ``--allowed-host``.
    """
    names = {*LOOPBACK_NAMES}
    if bind not in WILDCARD_BINDS:
        names.add(bind.strip("[]").lower())
        return tuple(sorted(names))
    for name in {socket.gethostname(), socket.getfqdn()}:
        names.add(name.lower())
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            pass  # a host name that does not resolve: the name itself is still accepted
    return tuple(sorted(names))


def host_of(scope: Scope) -> str | None:
    """The host name of the request's Host header, lower-case, without port, brackets or final dot."""
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # [::1]:8000
                host = host[1:].partition("]")[0]
            elif host.count(":") == 1:
                host = host.partition(":")[0]
            return host.rstrip(".")
    return None


class HostCheckMiddleware:
    """Refuse (400) a request whose Host header is not one of ``allowed`` (``"*"`` allows any).

    Without it, a web page on another site could resolve its own name to 127.0.0.1 (DNS
    rebinding) and read a keyless local server's images and results from the user's browser.
    """

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = frozenset(h.strip("[]").lower().rstrip(".") for h in allowed)
        self.any = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            return await self.app(scope, receive, send)
        host = host_of(scope)
        if host not in self.allowed:
            return await send_json(send, 400, {
                "error": f"Host header {host!r} is not served here; start the server with --allowed-host "
                         f"{host or 'NAME'} to allow it", "code": "bad_host"})
        return await self.app(scope, receive, send)


class APIKeyMiddleware:
    """Refuse (401) every non-public route unless the request carries the configured key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return await self.app(scope, receive, send)
        got = request_key(scope)
        # constant-time comparison: the key cannot be guessed byte by byte from response times
        if got is None or not hmac.compare_digest(got.encode("utf-8", "replace"), self.api_key):
            return await send_json(send, 401, {"error": "missing or wrong API key: send header X-API-Key "
                                                        "or ?api_key=", "code": "unauthorized"})
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse (413) a request whose body is larger than ``max_bytes``.

    Checks Content-Length up front, and counts the bytes of a chunked body as they arrive, so a
    client that lies or sends no length still cannot make the server spool more than the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> dict:
        return {"error": f"request body larger than {self.max_bytes / 1024 / 1024:.1f} MB; upload a smaller "
                         "image (the server's --max-upload-mb)", "code": "too_large"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    return await send_json(send, 400, {"error": "bad Content-Length header", "code": "bad_request"})
                if too_big:
                    return await send_json(send, 413, self._message())
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_json(send, 413, self._message())


class SecurityHeadersMiddleware:
    """Add ``nosniff`` and ``no-referrer`` to every response (pure ASGI: no per-request task overhead)."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class _TooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing lets it through as a 413."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large; upload a smaller image (the server's --max-upload-mb)")
