"""The HTTP/1.1 connection protocol (compiled: engine/http/_connection.pyx).

Import from here: ``HttpConnection``, ``ConnectionRegistry``, ``Request``,
``RequestRefused``, ``Ticket`` (what an answer waiting for its spool group
holds) and ``FastRoutes`` (the base of the ingest stage's compiled routes),
and the connection states ``IDLE``, ``READING``, ``CLOSED``.
"""
from engine.http._connection import (CLOSED, IDLE, READING, ConnectionRegistry, FastRoutes,
                                     HttpConnection, Request, RequestRefused, Ticket)

__all__ = ["CLOSED", "IDLE", "READING", "ConnectionRegistry", "FastRoutes", "HttpConnection",
           "Request", "RequestRefused", "Ticket"]


from typing import Protocol, runtime_checkable  # noqa: E402


@runtime_checkable
class ConnectionApp(Protocol):
    """What ``HttpConnection`` calls on the app behind it (TrackerApp,
    AdminApp, PlainPortApp) and the one attribute it reads."""

    fast: FastRoutes | None       # compiled routes claiming requests, or None

    def admit_connection(self, conn) -> bytes | None:
        """A new connection: None to serve it, or a refusal to write and close."""

    def connection_closed(self, conn) -> None:
        """The connection is gone (undo what admit_connection counted)."""

    def route_head(self, conn, req):
        """At the end of a slow-path request head: a Stream the body goes to
        (a proxied exchange), refusal bytes, or None (answer at the end)."""

    def handle(self, conn, req, keep: bool):
        """A complete slow-path request: its answer (bytes or a Stream)."""

    def error_response(self, status: int, text: str) -> bytes:
        """The answer to a request refused while it was read (then closed)."""

    def unavailable_response(self) -> bytes:
        """The answer to a request whose spool group failed (503)."""

    def count_error(self, status: int) -> None:
        """Count an error answer in the metrics."""

    def internal_error(self, conn, exc: BaseException) -> None:
        """Log a handler bug (the connection answers 500)."""
