# cython: language_level=3, boundscheck=False, wraparound=False
"""One HTTP/1.1 connection: an asyncio Protocol driving httptools (compiled).

Per-connection state lives on ``HttpConnection``. A request on a route the
app's compiled ``FastRoutes`` claims (the tracking routes) is read into typed
fields of the connection, reused from request to request: only the headers
those routes use are kept, no dict and no Request object is built, and the
answer is produced by compiled code (engine/ingest/_track.pyx). Any other
request gets a ``Request`` with a header dict and goes to ``app.handle`` /
``app.route_head`` in Python (service routes, proxy, static files, the plain
port's redirects).

Answers that must wait — for a spool commit, or because they are streams
written over time (a proxied exchange, a large file; engine/http/stream.py)
— go into ``pending``, which keeps answers in request order for pipelining
clients. An answer waiting for spool group N is released when the spool's
``Commits.done_epoch`` reaches N: the spool writer calls ``release`` on every
connection in ``Commits.waiting`` once a group is settled.

Timeouts are enforced by the worker's once-a-second sweep over open
connections (``ConnectionRegistry.sweep``) rather than a timer per request:
arming and cancelling a timer per request would cost more than parsing it.
"""
from collections import deque

from libc.stdint cimport uint64_t
from libc.string cimport memcmp

import httptools

from engine.http import responses
from engine.http.stream import Stream

cdef extern from "strings.h":
    int strncasecmp(const char* a, const char* b, size_t n) nogil

cdef extern from "Python.h":
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)

cdef int MAX_PENDING = 32    # answers queued behind a slow one before reading pauses

IDLE, READING, CLOSED = 0, 1, 2
cdef enum:
    S_IDLE = 0
    S_READING = 1
    S_CLOSED = 2

cdef object _HttpParserUpgrade = httptools.HttpParserUpgrade
cdef object _HttpParserCallbackError = httptools.HttpParserCallbackError
cdef object _HttpParserError = httptools.HttpParserError
cdef bytes _CONTINUE = responses.CONTINUE


class RequestRefused(Exception):
    """A request refused while its head is read: answered ``status`` and the
    connection closed (414, 431 and 413 for sizes; 400 for a missing Host)."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


class Request:
    """What one slow-path request carried (per-request state)."""
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
        self.client_ip = ""
        self.stream = None      # the Stream this request's body is fed to (proxy)
        self.upgrade = False    # the client asked for an Upgrade (WebSocket)
        self.route = None       # set when the route was already looked up at the head

    def header(self, name, default=None):
        """A header value decoded as Latin-1 (HTTP's own charset)."""
        value = self.headers.get(name)
        return default if value is None else value.decode("latin-1")


cdef class Commits:
    """The spool's group state as connections see it (subclassed by the spool
    writer). ``done_epoch``: every group up to it is settled; a settled
    group's answers are 2xx unless its write failed (``is_failed``)."""

    def __init__(self, unavailable):
        self.done_epoch = 0
        self.waiting = []
        self.failed_epochs = set()
        self.unavailable = unavailable

    cdef bint is_failed(self, uint64_t epoch):
        return bool(self.failed_epochs) and epoch in self.failed_epochs


cdef class FastRoutes:
    """Base of compiled routes: claims nothing."""

    cdef int claim(self, HttpConnection conn) except -1:
        return 0

    cdef int answer(self, HttpConnection conn, bint keep) except -1:
        raise NotImplementedError


cdef class ConnectionRegistry:
    """The open connections of one worker, and the coarse clock for deadlines."""

    def __init__(self, limits):
        self.limits = limits
        self.open = set()
        self.streams = set()    # streams with deadlines (engine/http/stream.py)
        self.draining = False
        self.clock = 0.0
        self.date = responses.DateHeader()
        self.idle_timeout = limits.idle_timeout
        self.read_timeout = limits.read_timeout
        self.write_timeout = limits.write_timeout
        self.max_header_bytes = limits.max_header_bytes
        self.max_body_bytes = limits.max_body_bytes

    def sweep(self, now):
        self.clock = now
        self.date.refresh()
        for conn in [c for c in self.open if (<HttpConnection>c).deadline < now]:
            conn.on_deadline()
        for stream in [s for s in self.streams if s.deadline < now]:
            stream.check_deadline(now)


cdef inline bint _named(bytes name, const char* lower, Py_ssize_t n):
    return PyBytes_GET_SIZE(name) == n and strncasecmp(PyBytes_AS_STRING(name), lower, n) == 0


cdef inline bytes _join(bytes prior, bytes value, bytes sep):
    return value if prior is None else prior + sep + value


cdef class HttpConnection:
    # ---- per-connection state --------------------------------------------
    def __init__(self, app, ConnectionRegistry registry, tls=False):
        self.app = app
        self.registry = registry
        self.limits = registry.limits
        self.tls = tls
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.request = None
        self.client_ip = ""
        self.state = S_IDLE
        self.deadline = 0.0
        self.closing = False       # answer the current request, then close
        self.counted = False       # counted in the node-wide connection total
        self.pending = deque()     # (epoch, answer, keep): answers not yet written
        self.read_paused = False   # reading paused because too many answers pend
        self.tunnel_to = None      # after an accepted Upgrade: the stream raw bytes go to
        self.parser_done = False   # no more requests on this connection (an Upgrade, an error)
        self.read_eof = False      # client half-closed while answers were pending
        self.write_paused_at = 0.0
        self.fast = getattr(app, "fast", None)
        self.commits = getattr(app, "commits", None)

    # ---- protocol interface ----------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.registry.open.add(self)
        self.deadline = self.registry.clock + self.registry.idle_timeout
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
        self.state = S_CLOSED
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
        except _HttpParserUpgrade as upgrade:
            self.parser_done = True
            if self.tunnel_to is not None:
                self.tunnel_to.tunnel(data[upgrade.args[0]:])
        except _HttpParserCallbackError as exc:
            self._callback_failed(exc)
        except _HttpParserError as exc:
            if exc.args and exc.args[0] == "Content-Length overflow":
                self.error_and_close(413, "body too large")    # RFC 9110 8.6
            else:
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
        self.deadline = self.registry.clock + self.registry.write_timeout
        self.transport.pause_reading()
        stream = self._head_stream()
        if stream is not None:
            stream.pause_output()

    def resume_writing(self):
        self.write_paused_at = 0.0
        if self.state != S_CLOSED:
            if not self.read_paused:
                self.transport.resume_reading()
            stream = self._head_stream()
            if stream is not None:
                stream.resume_output()
            if self.state == S_IDLE:
                self.deadline = self.registry.clock + self.registry.idle_timeout

    # ---- parser callbacks ------------------------------------------------
    def on_message_begin(self):
        self.state = S_READING
        self.deadline = self.registry.clock + self.registry.read_timeout
        self.request = None
        self.decided = False
        self.is_fast = False
        self.upgrade = False
        self.route = 0
        self.url = None
        self.head_bytes = 0
        self.hosts = 0
        self.authority = None
        self.user_agent = self.accept_language = self.cookie = self.origin = None
        self.forwarded_for = self.forwarded = self.content_length = self.expect = None
        self.dnt = self.gpc = None
        self.body = None
        self.body_size = 0

    def on_url(self, bytes url):
        self.url = url if self.url is None else self.url + url
        self.head_bytes += PyBytes_GET_SIZE(url)
        if self.head_bytes > self.registry.max_header_bytes:
            raise RequestRefused(414, "request target too long")

    cdef int _decide(self) except -1:
        """The request line is complete: fast route or slow path."""
        cdef object req
        self.decided = True
        self.method = self.parser.get_method()
        if self.url is not None and self.url[:1] != b"/":
            self._origin_form()
        if self.fast is not None and self.fast.claim(self):
            self.is_fast = True
            return 0
        req = Request()
        req.url = self.url if self.url is not None else b""
        req.head_bytes = self.head_bytes
        req.client_ip = self.client_ip
        self.request = req
        return 0

    def on_header(self, bytes name, bytes value):
        if not self.decided:
            self._decide()
        self.head_bytes += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
        if self.head_bytes > self.registry.max_header_bytes:
            raise RequestRefused(431, "request headers too large")
        if self.is_fast:
            self._fast_header(name, value)
        else:
            self._slow_header(name, value)

    cdef int _fast_header(self, bytes name, bytes value) except -1:
        """Keep only what the compiled routes read (repeated ones joined as
        RFC 9110 allows; cookies with "; ")."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
        if n == 4:
            if _named(name, b"host", 4):
                self.hosts += 1
        elif n == 6:
            if _named(name, b"cookie", 6):
                self.cookie = _join(self.cookie, value, b"; ")
            elif _named(name, b"origin", 6):
                self.origin = _join(self.origin, value, b", ")
            elif _named(name, b"expect", 6):
                self.expect = _join(self.expect, value, b", ")
        elif n == 10:
            if _named(name, b"user-agent", 10):
                self.user_agent = _join(self.user_agent, value, b", ")
        elif n == 15:
            if _named(name, b"accept-language", 15):
                self.accept_language = _join(self.accept_language, value, b", ")
            elif _named(name, b"x-forwarded-for", 15):
                self.forwarded_for = _join(self.forwarded_for, value, b", ")
        elif n == 14:
            if _named(name, b"content-length", 14):
                self.content_length = _join(self.content_length, value, b", ")
        elif n == 9:
            if _named(name, b"forwarded", 9):
                self.forwarded = _join(self.forwarded, value, b", ")
        elif n == 3:
            if _named(name, b"dnt", 3):
                self.dnt = _join(self.dnt, value, b", ")
        elif n == 7:
            if _named(name, b"sec-gpc", 7):
                self.gpc = _join(self.gpc, value, b", ")
        return 0

    cdef int _slow_header(self, bytes name, bytes value) except -1:
        cdef dict headers = self.request.headers
        cdef object prior
        name = name.lower()
        if name == b"host":
            self.hosts += 1
        prior = headers.get(name)
        if prior is None:
            headers[name] = value
        else:  # repeated header: join as RFC 9110 allows (cookies with "; ")
            headers[name] = prior + (b"; " if name == b"cookie" else b", ") + value
        return 0

    def on_headers_complete(self):
        parser = self.parser
        if not self.decided:
            self._decide()
        keep_alive = parser.should_keep_alive()
        http_10 = parser.get_http_version() == "1.0"
        self._check_host(http_10)
        if self.is_fast:
            self.keep_alive = keep_alive
            self.http_10 = http_10
            self.upgrade = parser.should_upgrade()
            self._check_body_head(self.content_length, self.expect)
            return
        req = self.request
        req.method = self.method
        req.head_bytes = self.head_bytes
        req.keep_alive = keep_alive
        req.http_10 = http_10
        req.upgrade = parser.should_upgrade()
        if self.authority is not None:
            req.headers[b"host"] = self.authority   # RFC 9112 3.2.2
        answer = self.app.route_head(self, req)
        if answer is not None:          # streamed (proxied): the body goes to it
            keep = req.keep_alive and not self.closing and not req.upgrade
            if answer.__class__ is bytes:
                req.stream = _DISCARD
                self.answer_c(0, answer, False)
            else:
                req.stream = answer
                self.answer_c(0, answer, keep)
            return
        self._check_body_head(req.headers.get(b"content-length"), req.headers.get(b"expect"))

    def _origin_form(self):
        """An absolute-form target (``http://host/path?q``): route and parse
        its path and query; its authority replaces Host (RFC 9112 3.2.2).
        Anything else that does not start with "/" is left to the routes
        (404, or the proxy's answer)."""
        url = self.url
        scheme, sep, rest = url.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            return
        end = len(rest)
        for i, c in enumerate(rest):
            if c == 47 or c == 63:      # "/" or "?"
                end = i
                break
        self.authority = rest[:end]
        path = rest[end:]
        self.url = path if path[:1] == b"/" else b"/" + path

    def _check_host(self, http_10):
        # RFC 9112 3.2: exactly one Host in HTTP/1.1 (at most one in 1.0)
        if self.hosts > 1:
            raise RequestRefused(400, "more than one Host header")
        if not http_10 and not self.hosts:
            raise RequestRefused(400, "missing Host header")

    def _check_body_head(self, length, expect):
        if length is not None and length.isdigit() and \
                int(length) > self.registry.max_body_bytes:
            raise RequestRefused(413, "body too large")
        if expect is not None and expect.lower() == b"100-continue" and not self.pending:
            self.transport.write(_CONTINUE)

    def on_body(self, bytes body):
        req = self.request
        if req is not None and req.stream is not None:
            req.stream.feed(body)
            self.deadline = self.registry.clock + self.registry.read_timeout
            return
        self.body_size += PyBytes_GET_SIZE(body)
        if self.body_size > self.registry.max_body_bytes:
            raise RequestRefused(413, "body too large")
        if self.body is None:
            self.body = [body]
        else:
            self.body.append(body)

    def on_message_complete(self):
        cdef bint keep
        self.state = S_IDLE
        self.deadline = self.registry.clock + self.registry.idle_timeout
        if self.is_fast:
            keep = self.keep_alive and not self.closing and not self.upgrade
            self.fast.answer(self, keep)
            return
        req = self.request
        self.request = None
        if req.stream is not None:
            req.stream.feed_eof()
            if req.upgrade and req.stream is not _DISCARD:
                self.tunnel_to = req.stream
            return
        if self.body is not None:
            req.body = b"".join(self.body)
            req.body_size = self.body_size
        keep = req.keep_alive and not self.closing and not req.upgrade
        response = self.app.handle(self, req, keep)
        self.answer_c(req.wait_epoch, response, keep)

    # ---- answers in request order -----------------------------------------
    def answer(self, epoch, answer, keep):
        """Write ``answer`` (bytes or a Stream) now if nothing is ahead of it,
        else queue it; ``epoch``: the spool group it must wait for (0: none)."""
        self.answer_c(epoch, answer, keep)

    cdef int answer_c(self, uint64_t epoch, object answer, bint keep) except -1:
        if not self.pending and not epoch and type(answer) is bytes:
            self.transport.write(answer)
            if not keep:
                self.close()
            return 0
        if epoch and self.commits is None:
            raise RuntimeError("an answer waits for a spool group, but the app has no commits")
        self.pending.append((epoch, answer, keep))
        if epoch and not self.awaiting_commit:
            self.awaiting_commit = True
            self.commits.waiting.append(self)
        if type(answer) is bytes and (not keep or len(self.pending) > MAX_PENDING) \
                and not self.read_paused:
            self.read_paused = True      # (a stream keeps reading: its body comes next)
            self.transport.pause_reading()
        self.release_c()
        return 0

    def release(self):
        """Write what can be written: called when an answer is queued, by the
        spool writer after each settled group (which takes the connection off
        ``commits.waiting`` first), and when a stream finishes."""
        self.awaiting_commit = False
        self.release_c()

    cdef int release_c(self) except -1:
        cdef Commits commits = self.commits
        cdef object pending = self.pending
        cdef uint64_t epoch
        cdef bint keep
        while pending:
            epoch, answer, keep = pending[0]
            if epoch and epoch > commits.done_epoch:
                if not self.awaiting_commit:
                    self.awaiting_commit = True
                    commits.waiting.append(self)
                return 0
            if self.state == S_CLOSED or self.transport.is_closing():
                self._drop_pending()
                return 0
            if type(answer) is not bytes:
                if not answer.started:
                    answer.start(self)   # may finish at once (stream_finished)
                return 0
            pending.popleft()
            if epoch and commits.is_failed(epoch):
                answer, keep = commits.unavailable(), False
            self.transport.write(answer)
            if not keep:
                self._drop_pending()
                self.close()
                return 0
        if self.read_eof:
            self.close()
        elif self.read_paused:
            self.read_paused = False
            if not self.write_paused_at:
                self.transport.resume_reading()
        return 0

    def stream_finished(self, stream, keep):
        """A stream has written all of its answer."""
        if self.pending and self.pending[0][1] is stream:
            self.pending.popleft()
        if self.tunnel_to is stream:
            self.tunnel_to = None
            keep = False
        if self.state == S_IDLE:
            self.deadline = self.registry.clock + self.registry.idle_timeout
        if not keep or (self.closing and not self.pending and self.state == S_IDLE):
            self._drop_pending()
            self.close()
            return
        self.release_c()

    def _head_stream(self):
        if self.pending:
            answer = self.pending[0][1]
            if type(answer) is not bytes and answer.started:
                return answer
        return None

    cdef int _drop_pending(self) except -1:
        pending, self.pending = self.pending, deque()
        for _, answer, _ in pending:
            if type(answer) is not bytes:
                answer.close()
        return 0

    # ---- helpers ---------------------------------------------------------
    def _callback_failed(self, exc):
        cause = exc.__context__
        if isinstance(cause, RequestRefused):
            self.error_and_close(cause.status, cause.text)
        else:
            self.app.internal_error(self, cause or exc)
            self.error_and_close(500, "internal error")

    def error_and_close(self, status, text):
        """Answer ``status`` after any pending answers, then close; read
        nothing more from this client."""
        if self.state == S_CLOSED or self.transport.is_closing():
            return
        self.app.count_error(status)
        req = self.request
        if req is not None and req.stream is not None and req.stream is not _DISCARD \
                and req.stream.started:
            self.transport.abort()       # its stream's answer is already on the wire
            return
        self.parser_done = True
        self.answer_c(0, self.app.error_response(status, text), False)

    def on_deadline(self):
        """Called by the sweep when this connection overstayed."""
        req = self.request
        if self.write_paused_at:
            self.transport.abort()   # a client that does not read its answers
        elif self.state == S_READING:
            if req is not None and req.stream is not None and req.stream is not _DISCARD:
                self.transport.abort()   # stalled mid-upload to a stream
            else:
                self.error_and_close(408, "request timeout")
        elif self.pending and type(self.pending[0][1]) is not bytes:
            # a stream is answering: its own deadlines apply (registry.streams)
            self.deadline = self.registry.clock + self.registry.idle_timeout
        else:
            self.close()             # idle keep-alive connection

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def drain(self):
        """Draining: close when idle, else after the answer in progress."""
        self.closing = True
        if self.state == S_IDLE:
            # Closing an idle keep-alive connection races with a request the
            # client may be sending; give it a moment to send one (answered
            # with "Connection: close"), then the sweep closes it.
            self.deadline = min(self.deadline, self.registry.clock + 1.0)


class _Discard(Stream):
    """Where the body of a request answered at its head (refused) goes."""
    started = True

    def start(self, conn):
        pass


cdef object _DISCARD = _Discard()
