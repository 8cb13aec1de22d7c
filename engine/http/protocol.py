"""One HTTP/1.1 connection: an asyncio Protocol driving httptools.

Per-connection state lives on ``HttpConnection``; per-request state on
``Request``. Handlers are synchronous (tracking does no I/O on the request
path): most answers are written as soon as their message completes. Answers
that must wait — for a spool commit, or because they are streams written over
time (a proxied exchange, a large file; engine/http/stream.py) — go into
``pending``, which keeps answers in request order for pipelining clients.

Timeouts are enforced by the worker's once-a-second sweep over open
connections (``ConnectionRegistry.sweep``) rather than a timer per request:
arming and cancelling a timer per request would cost more than parsing it.
"""
from collections import deque

import httptools

from . import responses
from .stream import Stream

MAX_PENDING = 32    # answers queued behind a slow one before reading pauses

IDLE, READING, CLOSED = 0, 1, 2


class RequestTooLarge(Exception):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


class Request:
    """What one request carried (per-request state)."""
    __slots__ = ("method", "url", "headers", "body", "body_size", "head_bytes",
                 "keep_alive", "http_10", "client_ip", "wait_epoch", "stream", "upgrade",
                 "route")

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
        self.stream = None      # the Stream this request's body is fed to (proxy)
        self.upgrade = False    # the client asked for an Upgrade (WebSocket)
        self.route = None       # set when the route was already looked up at the head

    def header(self, name, default=None):
        """A header value decoded as Latin-1 (HTTP's own charset)."""
        value = self.headers.get(name)
        return default if value is None else value.decode("latin-1")


class ConnectionRegistry:
    """The open connections of one worker, and the coarse clock for deadlines."""

    def __init__(self, limits):
        self.limits = limits
        self.open = set()
        self.streams = set()    # streams with deadlines (engine/http/stream.py)
        self.draining = False   # set by the worker's drain: new connections close early
        self.clock = 0.0
        self.date = responses.DateHeader()

    def sweep(self, now):
        self.clock = now
        self.date.refresh()
        for conn in [c for c in self.open if c.deadline < now]:
            conn.on_deadline()
        for stream in [s for s in self.streams if s.deadline < now]:
            stream.check_deadline(now)


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
        self.pending = deque()     # [epoch, answer, keep]: answers not yet written
        self.read_paused = False   # reading paused because too many answers pend
        self.tunnel_to = None      # after an accepted Upgrade: the stream raw bytes go to
        self.parser_done = False   # no more requests on this connection (an Upgrade, an error)
        self.read_eof = False      # client half-closed while answers were pending
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
        elif self.registry.draining:
            # Accepted before the listener closed, made (TLS handshake done)
            # after the drain marked the open ones: drain it too, or it would
            # serve on until the drain cuts it mid-request.
            self.drain()

    def connection_lost(self, exc):
        self.state = CLOSED
        self.registry.open.discard(self)
        self._drop_pending()
        req = self.request
        if req is not None and req.stream is not None:
            req.stream.close()
        self.app.connection_closed(self)

    def data_received(self, data):
        if self.tunnel_to is not None:
            self.tunnel_to.tunnel(data)
            return
        if self.parser_done:
            return          # the last answer is queued; the connection closes after it
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.parser_done = True
            if self.tunnel_to is not None:
                self.tunnel_to.tunnel(data[upgrade.args[0]:])
        except httptools.HttpParserCallbackError as exc:
            self._callback_failed(exc)
        except httptools.HttpParserError:
            self.error_and_close(400, "malformed HTTP request")

    def eof_received(self):
        # The client half-closed. Pending answers are sent first (returning
        # True keeps the transport open for them).
        if self.tunnel_to is not None:
            self.tunnel_to.tunnel(b"")
            return True
        if self.pending:
            self.closing = True
            self.read_eof = True
            return True
        return False

    def pause_writing(self):
        # The client is not reading its answers: stop reading its requests,
        # and stop the stream producing them.
        self.write_paused_at = self.registry.clock or 1.0
        self.deadline = self.registry.clock + self.limits.write_timeout
        self.transport.pause_reading()
        stream = self._head_stream()
        if stream is not None:
            stream.pause_output()

    def resume_writing(self):
        self.write_paused_at = 0.0
        if self.state != CLOSED:
            if not self.read_paused:
                self.transport.resume_reading()
            stream = self._head_stream()
            if stream is not None:
                stream.resume_output()
            if self.state == IDLE:
                self.deadline = self.registry.clock + self.limits.idle_timeout

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
        req.upgrade = parser.should_upgrade()
        answer = self.app.route_head(self, req)
        if answer is not None:          # streamed (proxied): the body goes to it
            keep = req.keep_alive and not self.closing and not req.upgrade
            if answer.__class__ is bytes:
                req.stream = _DISCARD
                self.answer(0, answer, False)
            else:
                req.stream = answer
                self.answer(0, answer, keep)
            return
        length = req.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            raise RequestTooLarge(413, "body too large")
        if req.headers.get(b"expect", b"").lower() == b"100-continue" and not self.pending:
            self.transport.write(responses.CONTINUE)

    def on_body(self, body):
        req = self.request
        if req.stream is not None:
            req.stream.feed(body)
            self.deadline = self.registry.clock + self.limits.read_timeout
            return
        req.body_size += len(body)
        if req.body_size > self.limits.max_body_bytes:
            raise RequestTooLarge(413, "body too large")
        if req.body is None:
            req.body = [body]
        else:
            req.body.append(body)

    def on_message_complete(self):
        req = self.request
        self.request = None
        self.state = IDLE
        self.deadline = self.registry.clock + self.limits.idle_timeout
        if req.stream is not None:
            req.stream.feed_eof()
            if req.upgrade and req.stream is not _DISCARD:
                self.tunnel_to = req.stream
            return
        if req.body is not None:
            req.body = b"".join(req.body)
        keep = req.keep_alive and not self.closing and not req.upgrade
        response = self.app.handle(self, req, keep)
        self.answer(req.wait_epoch, response, keep)

    # ---- answers in request order -----------------------------------------
    def answer(self, epoch, answer, keep):
        """Write ``answer`` (bytes or a Stream) now if nothing is ahead of it,
        else queue it; ``epoch``: the spool group it must wait for (0: none)."""
        if not self.pending and not epoch and answer.__class__ is bytes:
            self.transport.write(answer)
            if not keep:
                self.close()
            return
        self.pending.append((epoch, answer, keep))
        if epoch:
            self.app.committer.waiting.add(self)
        if answer.__class__ is bytes and (not keep or len(self.pending) > MAX_PENDING) \
                and not self.read_paused:
            self.read_paused = True      # (a stream keeps reading: its body comes next)
            self.transport.pause_reading()
        self.release()

    def release(self):
        """Write what can be written: called when an answer is queued, by the
        committer after each group, and when a stream finishes."""
        committer = self.app.committer
        pending = self.pending
        while pending:
            epoch, answer, keep = pending[0]
            if epoch and epoch > committer.done_epoch:
                committer.waiting.add(self)
                return
            if self.state == CLOSED or self.transport.is_closing():
                self._drop_pending()
                return
            if answer.__class__ is not bytes:
                if not answer.started:
                    answer.start(self)   # may finish at once (stream_finished)
                return
            pending.popleft()
            if epoch and epoch in committer.failed:
                answer, keep = self.app.unavailable_response(), False
            self.transport.write(answer)
            if not keep:
                self._drop_pending()
                self.close()
                return
        if self.read_eof:
            self.close()
        elif self.read_paused:
            self.read_paused = False
            if not self.write_paused_at:
                self.transport.resume_reading()

    def stream_finished(self, stream, keep):
        """A stream has written all of its answer."""
        if self.pending and self.pending[0][1] is stream:
            self.pending.popleft()
        if self.tunnel_to is stream:
            self.tunnel_to = None
            keep = False
        if self.state == IDLE:
            self.deadline = self.registry.clock + self.limits.idle_timeout
        if not keep or (self.closing and not self.pending and self.state == IDLE):
            self._drop_pending()
            self.close()
            return
        self.release()

    def _head_stream(self):
        if self.pending:
            answer = self.pending[0][1]
            if answer.__class__ is not bytes and answer.started:
                return answer
        return None

    def _drop_pending(self):
        pending, self.pending = self.pending, deque()
        for _, answer, _ in pending:
            if answer.__class__ is not bytes:
                answer.close()

    # ---- helpers ---------------------------------------------------------
    def _callback_failed(self, exc):
        cause = exc.__context__
        if isinstance(cause, RequestTooLarge):
            self.error_and_close(cause.status, cause.text)
        else:
            self.app.internal_error(self, cause or exc)
            self.error_and_close(500, "internal error")

    def error_and_close(self, status, text):
        """Answer ``status`` after any pending answers, then close; read
        nothing more from this client."""
        if self.state == CLOSED or self.transport.is_closing():
            return
        self.app.count_error(status)
        req = self.request
        if req is not None and req.stream is not None and req.stream is not _DISCARD \
                and req.stream.started:
            self.transport.abort()       # its stream's answer is already on the wire
            return
        self.parser_done = True
        self.answer(0, self.app.error_response(status, text), False)

    def on_deadline(self):
        """Called by the sweep when this connection overstayed."""
        req = self.request
        if self.write_paused_at:
            self.transport.abort()   # a client that does not read its answers
        elif self.state == READING:
            if req.stream is not None and req.stream is not _DISCARD:
                self.transport.abort()   # stalled mid-upload to a stream
            else:
                self.error_and_close(408, "request timeout")
        elif self.pending and self.pending[0][1].__class__ is not bytes:
            # a stream is answering: its own deadlines apply (registry.streams)
            self.deadline = self.registry.clock + self.limits.idle_timeout
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


class _Discard(Stream):
    """Where the body of a request answered at its head (refused) goes."""
    started = True

    def start(self, conn):
        pass


_DISCARD = _Discard()
