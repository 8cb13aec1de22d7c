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
clients. An answer that waits for its spool group holds that group's
``Ticket``; when the group is settled the ticket releases the connections
waiting on it, and a failed group's answers become the app's 503
(``unavailable_response``): the spool knows tickets, not connections.

Timeouts are enforced by the worker's once-a-second sweep over open
connections (``ConnectionRegistry.sweep``) rather than a timer per request:
arming and cancelling a timer per request would cost more than parsing it.
"""
from collections import deque

from libc.string cimport memcmp

import httptools

from engine.http import responses
from engine.http.stream import Stream

cdef extern from "strings.h":
    int strncasecmp(const char* a, const char* b, size_t n) nogil

cdef extern from "Python.h":
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    bytes PyBytes_FromStringAndSize(const char* p, Py_ssize_t n)

cdef extern from "string.h":
    void* memmem(const void* haystack, size_t n, const void* needle, size_t m) nogil

cdef enum:
    M_GET = 1
    M_HEAD = 2
    M_POST = 3

cdef tuple _METHODS = (None, b"GET", b"HEAD", b"POST")

# RFC 9110 tchar: the bytes a header name may have.
cdef bint _TCHAR[256]


cdef void _build_tchar() noexcept:
    cdef const char* chars = (b"!#$%&'*+-.^_`|~0123456789"
                              b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    cdef int i = 0
    while chars[i]:
        _TCHAR[<unsigned char>chars[i]] = True
        i += 1

_build_tchar()


cdef Py_ssize_t _digits(bytes value):
    """A Content-Length of 1 to 15 digits as a number, else -1."""
    cdef const char* p = PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i, total = 0
    if n == 0 or n > 15:
        return -1
    for i in range(n):
        if not (48 <= p[i] <= 57):
            return -1
        total = total * 10 + (p[i] - 48)
    return total

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
                 "keep_alive", "http_10", "client_ip", "stream", "upgrade",
                 "route")

    def __init__(self):
        self.url = b""
        self.headers = {}
        self.body = None
        self.body_size = 0
        self.head_bytes = 0
        self.method = b""
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


cdef class Ticket:

    def __init__(self):
        self.settled = False
        self.failed = False
        self.waiters = []
        self.callbacks = None

    def add_callback(self, fn):
        """``fn(ok)`` once the group is settled (at once if it is)."""
        if self.settled:
            fn(not self.failed)
        elif self.callbacks is None:
            self.callbacks = [fn]
        else:
            self.callbacks.append(fn)

    cdef int wait(self, HttpConnection conn) except -1:
        if conn.waiting_on is not self:
            conn.waiting_on = self
            self.waiters.append(conn)
        return 0

    cpdef settle(self, bint ok):
        """The group is durable (``ok``) or was not written: answer it."""
        cdef HttpConnection conn
        self.settled = True
        self.failed = not ok
        waiters, self.waiters = self.waiters, []
        for conn in waiters:
            if conn.waiting_on is self:
                conn.waiting_on = None
                conn.release_c()
        if self.callbacks is not None:
            callbacks, self.callbacks = self.callbacks, None
            for fn in callbacks:
                fn(ok)


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
        self.accepted = 0

    def drain_accepted(self, stats):
        """Move the connections accepted since the last call into ``stats``
        (engine/metrics.py WorkerStats, at its sync)."""
        stats.accepted += self.accepted
        self.accepted = 0

    def sweep(self, now):
        self.clock = now
        self.date.refresh()
        for conn in [c for c in self.open if (<HttpConnection>c).deadline < now]:
            conn.on_deadline()
        for stream in [s for s in self.streams if s.deadline < now]:
            stream.check_deadline(now)


cdef inline bint _named(bytes name, const char* lower, Py_ssize_t n):
    return PyBytes_GET_SIZE(name) == n and strncasecmp(PyBytes_AS_STRING(name), lower, n) == 0


cdef enum:
    H_NONE = 0
    H_HOST = 1
    H_COOKIE = 2
    H_USER_AGENT = 3
    H_ACCEPT_LANGUAGE = 4
    H_ORIGIN = 5
    H_FORWARDED_FOR = 6
    H_FORWARDED = 7
    H_CONTENT_LENGTH = 8
    H_EXPECT = 9
    H_DNT = 10
    H_GPC = 11
    H_CONTENT_ENCODING = 12


cdef int _kept_header(const char* k, Py_ssize_t n) noexcept:
    """Which of the headers the fast routes read ``k`` names (any case)."""
    if n == 4:
        return H_HOST if strncasecmp(k, b"host", 4) == 0 else H_NONE
    if n == 6:
        if strncasecmp(k, b"cookie", 6) == 0:
            return H_COOKIE
        if strncasecmp(k, b"origin", 6) == 0:
            return H_ORIGIN
        return H_EXPECT if strncasecmp(k, b"expect", 6) == 0 else H_NONE
    if n == 10:
        return H_USER_AGENT if strncasecmp(k, b"user-agent", 10) == 0 else H_NONE
    if n == 15:
        if strncasecmp(k, b"accept-language", 15) == 0:
            return H_ACCEPT_LANGUAGE
        return H_FORWARDED_FOR if strncasecmp(k, b"x-forwarded-for", 15) == 0 else H_NONE
    if n == 14:
        return H_CONTENT_LENGTH if strncasecmp(k, b"content-length", 14) == 0 else H_NONE
    if n == 9:
        return H_FORWARDED if strncasecmp(k, b"forwarded", 9) == 0 else H_NONE
    if n == 3:
        return H_DNT if strncasecmp(k, b"dnt", 3) == 0 else H_NONE
    if n == 7:
        return H_GPC if strncasecmp(k, b"sec-gpc", 7) == 0 else H_NONE
    if n == 16:
        return H_CONTENT_ENCODING if strncasecmp(k, b"content-encoding", 16) == 0 else H_NONE
    return H_NONE


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
        self.parser = None         # httptools, made when a request first needs it
        self.request = None
        self.client_ip = ""
        self.state = S_IDLE
        self.deadline = 0.0
        self.closing = False       # answer the current request, then close
        self.counted = False       # counted in the node-wide connection total
        self.pending = deque()     # (ticket, answer, keep): answers not yet written
        self.read_paused = False   # reading paused because too many answers pend
        self.tunnel_to = None      # after an accepted Upgrade: the stream raw bytes go to
        self.parser_done = False   # no more requests on this connection (an Upgrade, an error)
        self.read_eof = False      # client half-closed while answers were pending
        self.write_paused_at = 0.0
        self.fast = getattr(app, "fast", None)
        self.scan = getattr(app, "scan", True)

    # ---- protocol interface ----------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.registry.accepted += 1
        # uvloop read the peer's address when it accepted (one getpeername,
        # kept as a sockaddr): this only formats it, no system call.
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

    def data_received(self, bytes data):
        cdef Py_ssize_t used
        if self.tunnel_to is not None:
            self.tunnel_to.tunnel(data)
            return
        if self.parser_done:
            return          # the last answer is queued; the connection closes after it
        if self.fast is not None and self.state == S_IDLE and self.scan:
            used = self._scan(data)
            if used == PyBytes_GET_SIZE(data) or self.parser_done:
                return
            if used:
                data = data[used:]
        if self.parser is None:
            # Most connections only carry requests the scan answers, so the
            # parser (an allocation and seven attribute look-ups, two of
            # which fail) is made on the first request the scan passes on.
            self.parser = httptools.HttpRequestParser(self)
        try:
            self.parser.feed_data(data)
        except _HttpParserUpgrade as upgrade:
            self.parser_done = True
            rest = data[upgrade.args[0]:]
            if self.tunnel_to is not None and rest:   # (empty means EOF to a tunnel)
                self.tunnel_to.tunnel(rest)
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
        self._reset_request()

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
        self._keep_header(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), value, NULL, 0)
        return 0

    cdef int _keep_header(self, const char* k, Py_ssize_t n, bytes value, const char* v,
                          Py_ssize_t vn) except -1:
        """Keep only what the compiled routes read (repeated ones joined as
        RFC 9110 allows; cookies with "; "). ``value``, or when it is None
        the ``vn`` bytes at ``v`` (made into bytes only when kept)."""
        cdef int which = _kept_header(k, n)
        if which == H_NONE:
            return 0
        if which == H_HOST:
            self.hosts += 1
            return 0
        if value is None:
            value = PyBytes_FromStringAndSize(v, vn)
        if which == H_COOKIE:
            self.cookie = _join(self.cookie, value, b"; ")
        elif which == H_USER_AGENT:
            self.user_agent = _join(self.user_agent, value, b", ")
        elif which == H_ACCEPT_LANGUAGE:
            self.accept_language = _join(self.accept_language, value, b", ")
        elif which == H_ORIGIN:
            self.origin = _join(self.origin, value, b", ")
        elif which == H_FORWARDED_FOR:
            self.forwarded_for = _join(self.forwarded_for, value, b", ")
        elif which == H_FORWARDED:
            self.forwarded = _join(self.forwarded, value, b", ")
        elif which == H_CONTENT_LENGTH:
            self.content_length = _join(self.content_length, value, b", ")
        elif which == H_EXPECT:
            self.expect = _join(self.expect, value, b", ")
        elif which == H_DNT:
            self.dnt = _join(self.dnt, value, b", ")
        elif which == H_GPC:
            self.gpc = _join(self.gpc, value, b", ")
        elif which == H_CONTENT_ENCODING:
            self.content_encoding = _join(self.content_encoding, value, b", ")
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
                self.answer_c(None, answer, False)
            else:
                req.stream = answer
                self.answer_c(None, answer, keep)
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

    cdef int _check_host(self, bint http_10) except -1:
        # RFC 9112 3.2: exactly one Host in HTTP/1.1 (at most one in 1.0)
        if self.hosts > 1:
            raise RequestRefused(400, "more than one Host header")
        if not http_10 and not self.hosts:
            raise RequestRefused(400, "missing Host header")
        return 0

    cdef int _check_body_head(self, object length, object expect) except -1:
        if length is not None and length.isdigit() and \
                int(length) > self.registry.max_body_bytes:
            raise RequestRefused(413, "body too large")
        if expect is not None and expect.lower() == b"100-continue" and not self.pending:
            self.transport.write(_CONTINUE)
        return 0

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
        self.answer_c(None, response, keep)

    # ---- plain requests to the fast routes, without httptools --------------
    cdef Py_ssize_t _scan(self, bytes data) except -1:
        """Answer the complete, plain requests at the start of ``data`` that
        the fast routes claim; return how many bytes they took. The rest
        (a partial request, anything unusual, any other route) goes to
        httptools from a message boundary, so llhttp stays the authority on
        every request this does not recognise as plainly well-formed."""
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), at = 0, used
        while at < n and not self.parser_done and self.state == S_IDLE:
            used = self._scan_one(data, p + at, n - at)
            if used == 0:
                break
            at += used
        return at

    cdef Py_ssize_t _scan_one(self, bytes data, const char* p, Py_ssize_t n) except -1:
        """One request at ``p``: bytes taken (answered), or 0 (not ours: untouched)."""
        cdef const char* end = <const char*>memmem(p, n, b"\r\n\r\n", 4)
        cdef Py_ssize_t head, i, target, target_end, body_len = 0, line, colon, v0, v1
        cdef int method
        cdef bint http_10, close = False, keep_token = False, has_length = False
        cdef Py_ssize_t limit = self.registry.max_header_bytes, counted
        cdef unsigned char c
        if end == NULL:
            return 0
        head = end - p + 4
        # request line: GET|HEAD|POST SP origin-form SP HTTP/1.x CRLF
        if n >= 4 and memcmp(p, b"GET ", 4) == 0:
            method, i = M_GET, 4
        elif n >= 5 and memcmp(p, b"HEAD ", 5) == 0:
            method, i = M_HEAD, 5
        elif n >= 5 and memcmp(p, b"POST ", 5) == 0:
            method, i = M_POST, 5
        else:
            return 0
        target = i
        if p[i] != b'/':
            return 0
        while i < head and p[i] != b' ':
            c = <unsigned char>p[i]
            if c < 0x21 or c > 0x7E:
                return 0
            i += 1
        target_end = i
        counted = target_end - target
        if counted > limit or i + 10 > head or memcmp(p + i, b" HTTP/1.", 8) != 0 \
                or p[i + 9] != b'\r' or p[i + 10] != b'\n':
            return 0
        if p[i + 8] == b'1':
            http_10 = False
        elif p[i + 8] == b'0':
            http_10 = True
        else:
            return 0
        self._reset_request()
        line = i + 11
        while line < head - 2:
            colon = line
            while colon < head and _TCHAR[<unsigned char>p[colon]]:
                colon += 1
            if colon == line or p[colon] != b':':
                return 0
            v0 = colon + 1
            while p[v0] == b' ' or p[v0] == b'\t':
                v0 += 1
            v1 = v0
            while p[v1] != b'\r':
                c = <unsigned char>p[v1]
                if c < 0x20 and c != 9 or c == 0x7F:
                    return 0
                v1 += 1
            if p[v1 + 1] != b'\n':
                return 0
            counted += (colon - line) + (v1 - v0) + 4
            if counted > limit:
                return 0
            i = self._scan_header(data, p, line, colon - line, v0, v1)
            if i < 0:
                return 0
            if i == 1:
                has_length = True
            elif i == 2:
                close = True
            elif i == 3:
                keep_token = True
            line = v1 + 2
        if self.hosts > 1 or (self.hosts == 0 and not http_10):
            return 0
        if has_length and method != M_POST:
            return 0   # a GET/HEAD body (or a bad length) is httptools' to frame or refuse
        if method == M_POST:
            if not has_length:
                return 0
            body_len = _digits(self.content_length)
            if body_len < 0 or body_len > self.registry.max_body_bytes or head + body_len > n:
                return 0
        self.url = PyBytes_FromStringAndSize(p + target, target_end - target)
        self.method = _METHODS[method]
        if not self.fast.claim(self):
            return 0
        self.decided = True
        self.is_fast = True
        self.http_10 = http_10
        self.keep_alive = keep_token if http_10 else not close
        self.head_bytes = counted
        if method == M_POST:
            self.body_size = body_len
            self.body = [PyBytes_FromStringAndSize(p + head, body_len)]
        self._answer_scanned()
        return head + body_len

    cdef int _scan_header(self, bytes data, const char* p, Py_ssize_t name,
                          Py_ssize_t name_len, Py_ssize_t v0, Py_ssize_t v1) except -2:
        """Keep what the fast routes read; 1 Content-Length, 2 "Connection:
        close", 3 "Connection: keep-alive", 0 anything else kept or ignored,
        -1 for what httptools must judge (framing, upgrades, expectations)."""
        cdef const char* k = p + name
        cdef bytes value
        if name_len == 14 and strncasecmp(k, b"content-length", 14) == 0:
            if self.content_length is not None:
                return -1
            self.content_length = PyBytes_FromStringAndSize(p + v0, v1 - v0)
            return 1
        if name_len == 10 and strncasecmp(k, b"connection", 10) == 0:
            if v1 - v0 == 5 and strncasecmp(p + v0, b"close", 5) == 0:
                return 2
            if v1 - v0 == 10 and strncasecmp(p + v0, b"keep-alive", 10) == 0:
                return 3
            return -1
        if (name_len == 17 and strncasecmp(k, b"transfer-encoding", 17) == 0) or \
                (name_len == 7 and strncasecmp(k, b"upgrade", 7) == 0) or \
                (name_len == 6 and strncasecmp(k, b"expect", 6) == 0):
            return -1
        self._keep_header(k, name_len, None, p + v0, v1 - v0)
        return 0

    cdef int _answer_scanned(self) except -1:
        """on_message_complete for a scanned request."""
        cdef bint keep = self.keep_alive and not self.closing
        self.state = S_IDLE
        self.deadline = self.registry.clock + self.registry.idle_timeout
        try:
            self.fast.answer(self, keep)
        except Exception as exc:    # a handler bug must not take the worker down
            self.app.internal_error(self, exc)
            self.error_and_close(500, "internal error")
            return 0
        if not keep:
            self.parser_done = True     # what follows a closing request is not read
        return 0

    cdef void _reset_request(self) noexcept:
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
        self.dnt = self.gpc = self.content_encoding = None
        self.body = None
        self.body_size = 0

    # ---- answers in request order -----------------------------------------
    def answer(self, ticket, answer, keep):
        """Write ``answer`` (bytes or a Stream) now if nothing is ahead of it,
        else queue it; ``ticket``: the spool group it waits for (or None)."""
        self.answer_c(ticket, answer, keep)

    cdef int answer_c(self, Ticket ticket, object answer, bint keep) except -1:
        if not self.pending and ticket is None and type(answer) is bytes:
            self.transport.write(answer)
            if not keep:
                self.close()
            return 0
        self.pending.append((ticket, answer, keep))
        if type(answer) is bytes and (not keep or len(self.pending) > MAX_PENDING) \
                and not self.read_paused:
            self.read_paused = True      # (a stream keeps reading: its body comes next)
            self.transport.pause_reading()
        self.release_c()
        return 0

    def release(self):
        """Write what can be written: called when an answer is queued, when
        a spool ticket it waits for is settled, and when a stream finishes."""
        self.release_c()

    cdef int release_c(self) except -1:
        cdef object pending = self.pending
        cdef Ticket ticket
        cdef bint keep
        while pending:
            ticket, answer, keep = pending[0]
            if ticket is not None and not ticket.settled:
                ticket.wait(self)
                return 0
            if self.state == S_CLOSED or self.transport.is_closing():
                self._drop_pending()
                return 0
            if type(answer) is not bytes:
                if not answer.started:
                    answer.start(self)   # may finish at once (stream_finished)
                return 0
            pending.popleft()
            if ticket is not None and ticket.failed:
                answer, keep = self.app.unavailable_response(), False
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
        self.answer_c(None, self.app.error_response(status, text), False)

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
