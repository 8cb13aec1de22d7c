"""One proxied request: the client's request streamed to the upstream, the
upstream's answer streamed back (a ``Stream``, engine/http/stream.py).

Nothing is buffered whole. Request body chunks go upstream as they arrive
(held only while the upstream connection is being set up, and then reading
from the client pauses past ``BODY_BUFFER``); response chunks go to the client
as they arrive, and the upstream is not read while the client's socket buffer
is full. So a 1 GiB upload or download passes at a flat memory cost.

Framing is redone on each side: the client's chunked body is re-chunked
upstream; the upstream's answer keeps its Content-Length, or is chunked
towards HTTP/1.1 clients (close-delimited towards HTTP/1.0 ones).

Failures: the upstream refuses or breaks before answering → 502; no connection
or no answer within the timeouts → 504; the upstream dies in the middle of an
answer → the client connection is aborted (a truncated body must not look
complete). A request without a body that fails on a reused keep-alive
connection (the upstream closed it while idle) is retried once on a fresh one.
"""
import asyncio
from time import perf_counter

from engine.http import responses
from engine.http.stream import FAR, Stream
from engine.logs import log

from engine.proxy.headers import (CHUNKED, LAST_CHUNK, LENGTH, NO_BODY, chunk, request_framing,
                      request_head, response_head)
from engine.proxy.upstream import PoolTimeout

BODY_BUFFER = 256 << 10     # request bytes held while connecting, before pausing the client
NO_BODY_STATUS = (204, 304)


class ProxyExchange(Stream):
    tunnelling = False

    def __init__(self, proxy, conn, req, keep, cookie, upgrade):
        self.proxy = proxy
        self.conn = conn
        self.req = req
        self.keep = keep
        self.cookie = cookie
        self.upgrade = upgrade            # the client's Upgrade value, or None
        self.framing = request_framing(req.headers)
        self.head_method = req.method == b"HEAD"
        self.expect = req.headers.get(b"expect", b"").lower() == b"100-continue"
        self.pending = []                 # body bytes / tunnel bytes not yet sent upstream
        self.pending_size = 0
        self.client_paused = False
        self.body_done = self.framing[0] == NO_BODY
        self.up = None                    # UpstreamConnection while we own it
        self.head_sent_upstream = False
        self.reused = False
        self.retried = False
        self.status = 0
        self.reason = b""
        self.up_headers = []
        self.informational = False
        self.head_sent = False
        self.out = NO_BODY                # framing towards the client
        self.until_close = False          # upstream body ends when it closes
        self.finished = False
        self.deadline = FAR
        self.task = None
        self.started_at = perf_counter()

    # ---- request body from the client ------------------------------------
    def feed(self, data):
        if self.finished:
            return                        # answered early: the rest is discarded
        if self.up is not None and self.head_sent_upstream:
            self._send_body(data)
            self.deadline = self.proxy.clock() + self.proxy.read_timeout
        else:
            self._hold(data)

    def feed_eof(self):
        self.body_done = True
        if not self.finished and self.up is not None and self.head_sent_upstream:
            if self.framing[0] == CHUNKED:
                self.up.transport.write(LAST_CHUNK)

    def _hold(self, data):
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > BODY_BUFFER and not self.client_paused:
            self.client_paused = True
            self.conn.transport.pause_reading()

    def _send_body(self, data):
        if data:
            self.up.transport.write(chunk(data) if self.framing[0] == CHUNKED else data)

    # ---- the exchange ----------------------------------------------------
    def start(self, conn):
        self.started = True
        if self.expect and not self.body_done:
            conn.transport.write(responses.CONTINUE)
        self.proxy.streams.add(self)
        self.deadline = self.proxy.clock() + self.proxy.connect_timeout + 1
        up = self.proxy.pool.idle_connection()
        if up is not None:
            self._attach(up, True)
        else:
            self.task = asyncio.ensure_future(self._connect())

    async def _connect(self):
        try:
            up, reused = await self.proxy.pool.acquire()
        except (asyncio.TimeoutError, PoolTimeout):
            self.fail(504, "upstream connect timeout\n")
            return
        except OSError as exc:
            self.fail(502, "upstream unreachable\n", exc)
            return
        except asyncio.CancelledError:
            return
        if self.finished:                 # the client went away meanwhile
            self.proxy.pool.release(up, True)
            return
        self._attach(up, reused)

    def _attach(self, up, reused):
        self.up, self.reused = up, reused
        up.exchange = self
        self._send_head()

    def _send_head(self):
        p, req = self.proxy, self.req
        head = request_head(req.method, p.url.target(req.url), req.headers, p.url.host_header,
                            self.conn.client_ip, p.peer_trusted(self.conn.client_ip),
                            self.conn.tls, self.framing, self.upgrade)
        self.up.transport.write(head)
        self.head_sent_upstream = True
        pending, self.pending, self.pending_size = self.pending, [], 0
        if self.upgrade is None:
            for data in pending:
                self._send_body(data)
            if self.body_done and self.framing[0] == CHUNKED:
                self.up.transport.write(LAST_CHUNK)
        else:
            self.pending = pending        # early tunnel bytes wait for the 101
        if self.client_paused and not self.pending:
            self.client_paused = False
            self.conn.transport.resume_reading()
        self.deadline = p.clock() + p.read_timeout

    # ---- the upstream's answer -------------------------------------------
    def on_upstream_header(self, name, value):
        self.up_headers.append((name, value))

    def on_upstream_head(self, parser):
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.informational = True     # 103 Early Hints and the like: dropped
            return
        self.status = status
        self.deadline = self.proxy.clock() + self.proxy.read_timeout
        length, up_chunked = None, False
        for name, value in self.up_headers:
            low = name.lower()
            if low == b"content-length" and value.strip().isdigit():
                length = int(value)
            elif low == b"transfer-encoding" and b"chunked" in value.lower():
                up_chunked = True
        no_body = self.head_method or status in NO_BODY_STATUS or status == 101
        if length is not None and not up_chunked:
            self.out = LENGTH
        elif no_body:
            self.out = NO_BODY
        elif self.req.http_10:
            self.out, self.keep = NO_BODY, False     # close-delimited
        else:
            self.out = CHUNKED
        self.until_close = length is None and not up_chunked and not no_body
        framing = (self.out, length or 0)
        if self.head_method and length is None:
            framing = (NO_BODY, 0)
        self._write(response_head(status, self.reason, self.up_headers, framing, self.cookie,
                                  self.proxy.hsts if self.conn.tls else b"", not self.keep))
        self.head_sent = True
        if self.head_method:
            # httptools cannot be told the answer has no body: this connection's
            # parser would wait for Content-Length bytes, so it is not reused.
            self._finish(self.keep, reusable=False)

    def on_upstream_body(self, body):
        if self.finished:
            return
        self._write(chunk(body) if self.out == CHUNKED else body)
        self.deadline = self.proxy.clock() + self.proxy.read_timeout

    def on_upstream_done(self, parser):
        if self.informational:
            self.informational, self.up_headers, self.reason = False, [], b""
            return
        if self.finished or self.status == 101:
            return                        # 101: upstream_upgraded follows
        if self.out == CHUNKED:
            self._write(LAST_CHUNK)
        self._finish(self.keep, reusable=parser.should_keep_alive() and self.body_done)

    # ---- upgrades (WebSocket) ----------------------------------------------
    def upstream_upgraded(self, rest):
        if self.status != 101 or self.upgrade is None:
            self.upstream_broken(self.up, ValueError("unexpected upgrade"))
            return
        self.tunnelling = True
        self.deadline = self.proxy.clock() + self.proxy.tunnel_timeout
        if rest:
            self._write(rest)
        for data in self.pending:
            self.up.transport.write(data)
        self.pending, self.pending_size = [], 0
        if self.client_paused:
            self.client_paused = False
            self.conn.transport.resume_reading()

    def tunnel(self, data):
        """Bytes from the client after its Upgrade request (b"" = it closed)."""
        if self.finished:
            return
        if not self.tunnelling:
            if data:
                self._hold(data)
            return
        if not data:
            self._finish(False, reusable=False)
            return
        self.up.transport.write(data)
        self.deadline = self.proxy.clock() + self.proxy.tunnel_timeout

    def upstream_tunnel(self, data):
        if not data:
            self._finish(False, reusable=False)
            return
        self._write(data)
        self.deadline = self.proxy.clock() + self.proxy.tunnel_timeout

    # ---- flow control ----------------------------------------------------
    def upstream_full(self):
        if not self.client_paused:
            self.client_paused = True
            self.conn.transport.pause_reading()

    def upstream_drained(self):
        if self.client_paused and not self.pending:
            self.client_paused = False
            self.conn.transport.resume_reading()

    def pause_output(self):
        if self.up is not None and not self.up.closed:
            self.up.transport.pause_reading()

    def resume_output(self):
        if self.up is not None and not self.up.closed:
            self.up.transport.resume_reading()

    # ---- failures and the end ----------------------------------------------
    def upstream_lost(self, up, exc):
        if self.finished or up is not self.up:
            return
        if self.head_sent:
            if self.until_close and not self.tunnelling:
                if self.out == CHUNKED:
                    self._write(LAST_CHUNK)
                self._finish(self.keep, reusable=False)
            else:
                self._abort_client()
            return
        if self.reused and not self.retried and self.framing[0] == NO_BODY and not self.upgrade:
            self.retried = True           # the upstream closed an idle connection
            self.up = None
            self.head_sent_upstream = False
            self.up_headers, self.reason = [], b""
            self.task = asyncio.ensure_future(self._connect())
            return
        self.fail(502, "upstream closed the connection\n", exc)

    def upstream_broken(self, up, exc):
        log.warning("upstream sent a malformed response", error=str(exc))
        if up is not None:
            up.abort()                    # upstream_lost follows, with self.up set
        if not self.finished:
            self._abort_client() if self.head_sent else self.fail(502, "bad upstream response\n")

    def check_deadline(self, now):
        if not self.finished and now >= self.deadline:
            if self.head_sent:
                log.warning("upstream stalled mid-answer; closing the client connection")
                self._abort_client()
            else:
                self.fail(504, "upstream timeout\n")
        return self.deadline

    def fail(self, status, text, exc=None):
        if self.finished:
            return
        if exc is not None:
            log.warning("proxy request failed", status=status, error=repr(exc),
                        upstream=f"{self.proxy.url.host}:{self.proxy.url.port}")
        self.status = status
        keep = self.keep and self.body_done and not self.upgrade
        self._write(responses.simple(status, self.proxy.date, text, close=not keep))
        self.head_sent = True
        self._finish(keep, reusable=False)

    def _abort_client(self):
        self._finish(False, reusable=False)
        self.conn.transport.abort()

    def _write(self, data):
        transport = self.conn.transport
        if not transport.is_closing():
            transport.write(data)

    def _finish(self, keep, reusable):
        if self.finished:
            return
        self.finished = True
        self.deadline = FAR
        self.proxy.streams.discard(self)
        up, self.up = self.up, None
        if up is not None:
            if reusable:
                up.transport.resume_reading()
                self.proxy.pool.release(up, True)
            else:
                up.exchange = None
                if self.tunnelling or not self.body_done:
                    up.abort()            # mid-stream: nothing left to say to it
                self.proxy.pool.release(up, False)
        if self.client_paused:
            self.client_paused = False
            self.conn.transport.resume_reading()
        self.proxy.stats.answered("proxy", self.status or 502, perf_counter() - self.started_at)
        self.conn.stream_finished(self, keep)

    def close(self):
        """The client connection is gone."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if not self.finished:
            self.finished = True
            self.proxy.streams.discard(self)
            up, self.up = self.up, None
            if up is not None:
                up.exchange = None
                up.abort()
                self.proxy.pool.release(up, False)
