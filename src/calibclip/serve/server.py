"""Running the app under uvicorn: a header timeout for slow clients, a one-line error for a taken port.

uvicorn's h11 protocol arms its keep-alive timer only after a response, and any byte received
cancels it, so a client that opens a connection and sends its request line and headers one byte
at a time holds the connection (and a file descriptor) forever. ``HeaderTimeoutH11`` closes a
connection whose request headers are not complete ``header_timeout`` seconds after it opened or
after its previous response.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from calibclip.errors import UserError

HEADER_TIMEOUT_S = 10.0


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request's headers."""

    header_timeout: float = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        self._arm_header_deadline()  # before super(): a pipelined request parsed there counts as arrived
        super().on_response_complete()

    _header_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        waiting_after = self.cycle  # a new request (complete headers) replaces the cycle object
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue, waiting_after)

    def _headers_overdue(self, waiting_after: Any) -> None:
        if self.cycle is waiting_after and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderTimeoutH11]:
    """A ``HeaderTimeoutH11`` subclass with its own deadline (uvicorn takes a protocol class)."""
    return type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout": float(seconds)})


def check_port_free(host: str, port: int) -> None:
    """Raise UserError (one line) when ``host:port`` cannot be bound, before announcing the server."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: {host}:{port} is already in use (another server?); choose "
                                "another --port or stop the other server") from None
            raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); check the "
                            "address, or use a port above 1023") from None


def run(app: Any, host: str, port: int, header_timeout: float = HEADER_TIMEOUT_S) -> None:
    """Serve ``app`` on ``host:port`` until interrupted."""
    import uvicorn

    # no access log: request URLs may carry ?api_key=
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                http=with_header_timeout(header_timeout), timeout_keep_alive=5)
