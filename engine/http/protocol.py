"""The HTTP/1.1 connection protocol (compiled: engine/http/_connection.pyx).

Import from here: ``HttpConnection``, ``ConnectionRegistry``, ``Request``,
``RequestRefused``, ``Commits`` and ``FastRoutes`` (the base classes the
ingest stage's spool writer and tracking routes extend), and the connection
states ``IDLE``, ``READING``, ``CLOSED``.
"""
from engine.http._connection import (CLOSED, IDLE, READING, Commits, ConnectionRegistry,
                                     FastRoutes, HttpConnection, Request, RequestRefused)

__all__ = ["CLOSED", "IDLE", "READING", "Commits", "ConnectionRegistry", "FastRoutes",
           "HttpConnection", "Request", "RequestRefused"]
