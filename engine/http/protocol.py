"""One HTTP/1.1 connection: an asyncio Protocol driving httptools.

Per-connection state lives on ``HttpConnection``; per-request state on
``Request``. Handlers are synchronous (tracking does no I/O on the request
path), so pipelined requests are answered in order simply by answering each
one as its message completes.

Timeouts are enforced by the worker's once-a-second sweep over open
connections (``ConnectionRegistry.sweep``) rather than a timer per request:
arming and cancelling a timer per request would cost more than parsing it.
"""
from collections import deque

import httptools

from . import responses

IDLE, READING, CLOSED = 0, 1, 2


class RequestTooLarge(Exception):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


class Request:
    """What one request carried (per-request state)."""
    __slots__ = ("method", "url", "headers", "body", "body_size", "head_bytes",
                 "keep_alive", "http_10", "client_ip", "wait_epoch")

    def __init__(self):
        self.url = b""
        self.headers = {}
        self.body = None
        self.body_size = 0
        self.head_bytes = 0
        self.method = b""
        self.wait_epoch = 0     # spool group whose commit this answer waits for
        self.keep_alive = True
        self.http_10 = False

    def header(self, name, default=None):
        """A header value decoded as Latin-1 (HTTP's own charset)."""
        value = self.headers.get(name)
        return default if value is None else value.decode("latin-1")


class ConnectionRegistry:
    """The open connections of one worker, and the coarse clock for deadlines."""

    def __init__(self, limits):
        self.limits = limits
        self.open = set()
        self.clock = 0.0
        self.date = responses.DateHeader()

    def sweep(self, now):
        self.clock = now
        self.date.refresh()
        for conn in [c for c in self.open if c.deadline < now]:
            conn.on_deadline()


class HttpConnection:
    # ---- per-connection state --------------------------------------------
    def __init__(self, app, registry, tls=False):
        self.app = app
        self.registry = registry
        self.limits = registry.limits
        self.tls = tls
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.request = None
        self.client_ip = ""
        self.state = IDLE
        self.deadline = 0.0
        self.closing = False       # answer the current request, then close
        self.counted = False       # counted in the node-wide connection total
        self.held = deque()        # (epoch, response, keep) waiting for a spool commit
        self.read_eof = False      # client half-closed while answers were held
        self.write_paused_at = 0.0

    # ---- protocol interface ----------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.registry.open.add(self)
        self.deadline = self.registry.clock + self.limits.idle_timeout
        refusal = self.app.admit_connection(self)
        if refusal is not None:
            transport.write(refusal)
            self.close()

    def connection_lost(self, exc):
        self.state = CLOSED
        self.registry.open.discard(self)
        self.app.connection_closed(self)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # upgrades are answered like any request; the proxy issue tunnels them
        except httptools.HttpParserCallbackError as exc:
            self._callback_failed(exc)
        except httptools.HttpParserError:
            self.error_and_close(400, "malformed HTTP request")

    def eof_received(self):
        # The client half-closed. Answers still waiting for the spool are sent
        # first (returning True keeps the transport open for them).
        if self.held:
            self.closing = True
            self.read_eof = True
            return True
        return False

    def pause_writing(self):
        # The client is not reading its answers: stop reading its requests.
        self.write_paused_at = self.registry.clock or 1.0
        self.deadline = self.registry.clock + self.limits.write_timeout
        self.transport.pause_reading()

    def resume_writing(self):
        self.write_paused_at = 0.0
        if self.state != CLOSED:
            self.transport.resume_reading()

    # ---- parser callbacks ------------------------------------------------
    def on_message_begin(self):
        self.request = Request()
        self.state = READING
        self.deadline = self.registry.clock + self.limits.read_timeout

    def on_url(self, url):
        req = self.request
        req.url += url
        req.head_bytes += len(url)
        if req.head_bytes > self.limits.max_header_bytes:
            raise RequestTooLarge(431, "request line too large")

    def on_header(self, name, value):
        req = self.request
        req.head_bytes += len(name) + len(value) + 4
        if req.head_bytes > self.limits.max_header_bytes:
            raise RequestTooLarge(431, "request headers too large")
        name = name.lower()
        prior = req.headers.get(name)
        if prior is None:
            req.headers[name] = value
        else:  # repeated header: join as RFC 9110 allows (cookies with "; ")
            req.headers[name] = prior + (b"; " if name == b"cookie" else b", ") + value

    def on_headers_complete(self):
        req = self.request
        parser = self.parser
        req.method = parser.get_method()
        req.keep_alive = parser.should_keep_alive()
        req.http_10 = parser.get_http_version() == "1.0"
        length = req.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            raise RequestTooLarge(413, "body too large")
        if req.headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(responses.CONTINUE)

    def on_body(self, body):
        req = self.request
        req.body_size += len(body)
        if req.body_size > self.limits.max_body_bytes:
            raise RequestTooLarge(413, "body too large")
        if req.body is None:
            req.body = [body]
        else:
            req.body.append(body)

    def on_message_complete(self):
        req = self.request
        if req.body is not None:
            req.body = b"".join(req.body)
        self.request = None
        self.state = IDLE
        self.deadline = self.registry.clock + self.limits.idle_timeout
        keep = req.keep_alive and not self.closing
        response = self.app.handle(self, req, keep)
        if req.wait_epoch or self.held:
            self.hold(req.wait_epoch, response, keep)
            return
        self.transport.write(response)
        if not keep:
            self.close()

    # ---- answers waiting for the spool ------------------------------------
    def hold(self, epoch, response, keep):
        """Keep an answer until its events are durable; answers stay in order,
        so anything after a held answer waits too."""
        self.held.append((epoch, response, keep))
        self.app.committer.waiting.add(self)
        if not keep:
            self.transport.pause_reading()

    def release(self):
        """Called by the committer after each group: send what is durable."""
        committer = self.app.committer
        while self.held:
            epoch, response, keep = self.held[0]
            if epoch > committer.done_epoch:
                committer.waiting.add(self)
                return
            self.held.popleft()
            if self.state == CLOSED or self.transport.is_closing():
                self.held.clear()
                return
            if epoch in committer.failed:
                response, keep = self.app.unavailable_response(), False
            self.transport.write(response)
            if not keep:
                self.held.clear()
                self.close()
                return
        if self.read_eof:
            self.close()

    # ---- helpers ---------------------------------------------------------
    def _callback_failed(self, exc):
        cause = exc.__context__
        if isinstance(cause, RequestTooLarge):
            self.error_and_close(cause.status, cause.text)
        else:
            self.app.internal_error(self, cause or exc)
            self.error_and_close(500, "internal error")

    def error_and_close(self, status, text):
        if self.state != CLOSED and not self.transport.is_closing():
            self.transport.write(self.app.error_response(status, text))
            self.app.count_error(status)
        self.close()

    def on_deadline(self):
        """Called by the sweep when this connection overstayed."""
        if self.state == READING:
            self.error_and_close(408, "request timeout")
        elif self.write_paused_at:
            self.transport.abort()   # a client that does not read its answers
        else:
            self.close()             # idle keep-alive connection

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def drain(self):
        """Draining: close when idle, else after the answer in progress."""
        self.closing = True
        if self.state == IDLE:
            # Closing an idle keep-alive connection races with a request the
            # client may be sending; give it a moment to send one (answered
            # with "Connection: close"), then the sweep closes it.
            self.deadline = min(self.deadline, self.registry.clock + 1.0)
