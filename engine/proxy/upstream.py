"""The upstream of the reverse proxy: ``ProxyUrl``, and one worker's bounded
pool of keep-alive connections to it.

``UpstreamPool.acquire`` hands out an idle connection (most recently used
first, so idle ones beyond need time out at the upstream rather than here) or
opens a new one, up to ``ProxyMaxConnections`` per worker; past that, callers
wait in line for a released connection, up to the connect timeout. Released
connections go back to the idle list, up to ``ProxyIdleConnections``.

``UpstreamConnection`` is the asyncio protocol of one connection: it parses
responses with httptools and hands every event to the exchange that owns the
connection at the moment (engine/proxy/exchange.py).
"""
import asyncio
import collections
import ssl
from urllib.parse import urlsplit

import httptools

from engine.errors import ConfigError


class UpstreamURL:
    """``ProxyUrl`` split into what a connection and a request need."""

    def __init__(self, url):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"ProxyUrl: got {url!r}, expected http://HOST[:PORT][/PREFIX] "
                              "or https://...")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (name if self.port == default else f"{name}:{self.port}").encode()
        # "http://api:9000/v2" sends "/x" to "/v2/x", as a path prefix.
        self.prefix = parts.path.rstrip("/").encode()

    def target(self, url):
        return self.prefix + url if self.prefix else url


def client_tls_context(verify):
    ctx = ssl.create_default_context()
    if not verify:     # IgnoreInsecureTLS: an upstream with a self-signed cert
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream; ``exchange`` is who gets its events."""

    def __init__(self, pool):
        self.pool = pool
        self.transport = None
        self.exchange = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)

    # ---- asyncio protocol ------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        self.pool.forget(self)
        if self.exchange is not None:
            self.exchange.upstream_lost(self, exc)

    def data_received(self, data):
        ex = self.exchange
        if ex is None:             # an idle connection must not talk: drop it
            self.transport.abort()
            return
        if ex.tunnelling:
            ex.upstream_tunnel(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            ex.upstream_upgraded(data[upgrade.args[0]:])
        except httptools.HttpParserError as exc:
            ex.upstream_broken(self, exc)

    def eof_received(self):
        if self.exchange is not None and self.exchange.tunnelling:
            self.exchange.upstream_tunnel(b"")
            return True
        return False

    def pause_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_full()

    def resume_writing(self):
        if self.exchange is not None:
            self.exchange.upstream_drained()

    # ---- httptools callbacks: straight to the exchange ---------------------
    # (an exchange that finished early, e.g. on a HEAD answer, has let go of
    # the connection; the rest of the bytes already fed are ignored)
    def on_status(self, reason):
        if self.exchange is not None:
            self.exchange.reason += reason

    def on_header(self, name, value):
        if self.exchange is not None:
            self.exchange.on_upstream_header(name, value)

    def on_headers_complete(self):
        if self.exchange is not None:
            self.exchange.on_upstream_head(self.parser)

    def on_body(self, body):
        if self.exchange is not None:
            self.exchange.on_upstream_body(body)

    def on_message_complete(self):
        if self.exchange is not None:
            self.exchange.on_upstream_done(self.parser)

    def close(self):
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self):
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class PoolTimeout(Exception):
    """Every upstream connection stayed busy for the whole connect timeout."""


class UpstreamPool:
    def __init__(self, url, config):
        self.url = url
        self.ssl = client_tls_context(not config.ignore_insecure_tls) if url.tls else None
        self.connect_timeout = config.proxy_connect_timeout
        self.max_idle = config.proxy_idle_connections
        self.max_open = config.proxy_max_connections
        self.idle = []
        self.open = 0
        self.waiters = collections.deque()

    def idle_connection(self):
        """A kept-alive connection ready now, or None (the common, task-free case)."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    async def acquire(self):
        """A connection ready for one request: (connection, reused?)."""
        conn = self.idle_connection()
        if conn is not None:
            return conn, True
        if self.open >= self.max_open:
            return await self._wait_for_release()
        self.open += 1
        try:
            _, conn = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                lambda: UpstreamConnection(self), self.url.host, self.url.port,
                ssl=self.ssl, server_hostname=self.url.host if self.ssl else None),
                self.connect_timeout)
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise
        return conn, False

    async def _wait_for_release(self):
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, self.connect_timeout)
        except asyncio.TimeoutError:
            raise PoolTimeout() from None
        except _Retry:
            return await self.acquire()
        finally:
            if fut in self.waiters:
                self.waiters.remove(fut)

    def release(self, conn, reusable):
        """The exchange is done with ``conn``; keep it if it can serve again."""
        conn.exchange = None
        if not reusable or conn.closed:
            conn.close()
            return
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result((conn, True))
                return
        if len(self.idle) < self.max_idle:
            self.idle.append(conn)
        else:
            conn.close()

    def forget(self, conn):
        """``conn`` is closed: it no longer counts against the cap."""
        if conn in self.idle:
            self.idle.remove(conn)
        self.open -= 1
        self._wake_one()

    def _wake_one(self):
        # A slot freed up: the first waiter opens a connection of its own.
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(_Retry())
                return


class _Retry(Exception):
    """Internal: a pool slot is free; acquire again."""
