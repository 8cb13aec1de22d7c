# cython: language_level=3, boundscheck=False, wraparound=False
"""The tracking routes answered in compiled code: /tr, /img, /rdr (GET, HEAD,
POST on /tr), from the connection's typed fields to the response bytes.

Per request: the rate limiter (shared memory), the parser writing the event
record straight into the spool's open group (engine/_parse.pyx,
engine/ingest/_spool.pyx), the answer assembled from constant pieces plus the
visitor's id, and counters in C arrays that ``drain_stats`` hands to the
worker's metrics twice a second. No dict, no Request object, no Python call
on the common path besides the limiter's.

HEAD answers the GET's status and headers without a body and is never
tracked (mail scanners and link prefetchers probe with HEAD): its request is
parsed into a scratch buffer, not the spool, and a visitor without a ``vid``
gets no cookie. OPTIONS (CORS preflight) and other methods are not claimed:
the Python app answers them (engine/ingest/app.py).

With ``TRACKER_PURE_PARSE=1`` the record comes from the reference parser
(engine/parse_ref.py) instead: same spool, same answers, slower.
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memchr, memcmp
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME, CLOCK_MONOTONIC
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8

from engine._parse cimport (Buf, buf_reserve, buf_free, Encoder, Outcome, TimeUUIDGen,
                           cookie_vid_c, _uuid_str)
from engine.http._connection cimport FastRoutes, HttpConnection, Ticket
from engine.ingest._spool cimport SpoolWriter
from engine.limits._bucket cimport SharedLimits

from engine._parse import BatchTooLarge, batch_items
from engine.errors import ParseError
from engine.ingest.bodies import BodyRefused, inflate
from engine.http import responses
from engine.ingest.redirect import safe_redirect
from engine.limits.policy import CLASS_NAMES, TRACK

cdef enum:
    R_TR = 1
    R_IMG = 2
    R_RDR = 3
    M_GET = 1
    M_HEAD = 2
    M_POST = 3
    NBUCKETS = 13

cdef tuple _ROUTE_NAMES = (None, "track", "img", "rdr")
cdef double[12] _BOUNDS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                           0.0025, 0.005, 0.01, 0.025, 0.1]
cdef const char* _HEX = b"0123456789abcdef"

cdef bytes _OK = b"HTTP/1.1 200 OK\r\n"
cdef bytes _FOUND = b"HTTP/1.1 302 Found\r\n"
cdef bytes _SERVER = responses.SERVER
cdef bytes _GIF_HEAD = b"Content-Type: image/gif\r\nContent-Length: %d\r\n" % len(responses.PIXEL_GIF)
cdef bytes _EMPTY = b"Content-Length: 0\r\n"
cdef bytes _COOKIE = b"Set-Cookie: vid="
cdef bytes _COOKIE_END = b"; Max-Age=31536000; Path=/; SameSite=Lax\r\n"
cdef bytes _COOKIE_END_TLS = b"; Max-Age=31536000; Path=/; SameSite=Lax; Secure\r\n"
cdef bytes _CORS = b"Access-Control-Allow-Origin: "
cdef bytes _CORS_END = b"\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
cdef bytes _NO_STORE = responses.NO_STORE
cdef bytes _LOCATION = b"Location: "
cdef bytes _CLOSE = responses.CLOSE
cdef bytes _PIXEL = responses.PIXEL_GIF
cdef int COOKIE_VALUE = 36


cdef inline double _mono() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline int64_t _now_ms() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef bint header_safe(const char* p, Py_ssize_t n) noexcept:
    """Printable ASCII only and not too long: safe to echo in a header."""
    cdef Py_ssize_t i
    if n >= 2048:
        return False
    for i in range(n):
        if not (32 <= <unsigned char>p[i] < 127):
            return False
    return True


cdef inline void _add(Buf* b, bytes piece) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(piece)
    memcpy(b.data + b.len, PyBytes_AS_STRING(piece), n)
    b.len += n


cdef inline void _add_raw(Buf* b, const char* p, Py_ssize_t n) noexcept:
    memcpy(b.data + b.len, p, n)
    b.len += n


cdef void _add_uuid(Buf* b, const uint8_t* u) noexcept:
    cdef char* out = b.data + b.len
    cdef int i, j = 0
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            out[j] = b'-'
            j += 1
        out[j] = _HEX[u[i] >> 4]
        out[j + 1] = _HEX[u[i] & 0xF]
        j += 2
    b.len += 36


cdef class TrackRoutes(FastRoutes):
    """The compiled /tr, /img, /rdr of one worker. ``app`` is the Python
    TrackerApp: its admission settings, redirect rules and refusal answers."""
    cdef Encoder encoder
    cdef TimeUUIDGen ids
    cdef SpoolWriter spool
    cdef object app
    cdef object date                # DateHeader, refreshed by the worker's sweep
    cdef bytes tr_prefix, img_prefix, rdr_prefix   # b"/tr/v1" ...
    cdef SharedLimits shared
    cdef bint limiting
    cdef double rate[4]
    cdef object resolver            # ClientIP when TrustedProxies is set, else None
    cdef object redirect_hosts
    cdef str default_redirect
    cdef bytes debug_header
    cdef object reference           # parse_ref.encode_track in pure mode
    cdef object url_filter
    cdef Buf scratch                # HEAD requests are parsed here, not spooled
    cdef Buf out                    # the answer being assembled
    cdef int64_t counts[4][2]       # route x (200, 302)
    cdef int64_t buckets[4][NBUCKETS]
    cdef double seconds[4]
    cdef public int64_t events      # accepted since the last drain_stats
    cdef object _keep_redirect      # the reference path's redirect bytes (res points in)
    cdef bytes _path, _query        # the request's parts: the outcome's redirect may point in
    cdef Py_ssize_t max_batch       # MaxBatchEvents
    cdef Py_ssize_t max_body        # MaxBodyBytes (a compressed body's decompressed size too)
    cdef object reference_batch     # parse_ref.encode_batch in pure mode
    cdef object privacy             # engine.ingest.privacy.Privacy, or None (all off)
    cdef bint spooling              # this request's events are stored (not HEAD, not dropped)
    cdef bint cookie_ok             # this request's answer may set the vid cookie

    def __init__(self, app, SpoolWriter spool, ids=None, pure=False):
        cfg = app.config
        version = cfg.api_prefix.encode()
        self.app = app
        self.spool = spool
        self.encoder = Encoder(cfg.url_filter)
        self.url_filter = cfg.url_filter
        self.ids = ids if ids is not None else TimeUUIDGen()
        self.date = app.date
        self.tr_prefix = b"/tr/" + version
        self.img_prefix = b"/img/" + version
        self.rdr_prefix = b"/rdr/" + version
        admission = app.admission
        self.shared = admission.shared
        self.rate = [float(x) for x in admission.rate_params[TRACK]]
        self.limiting = admission.limiting and admission.limited_classes[TRACK]
        self.resolver = admission.client_ip if admission.client_ip.networks else None
        self.redirect_hosts = app.redirect_hosts
        self.default_redirect = cfg.default_redirect
        self.debug_header = app.debug_header
        self.max_batch = cfg.max_batch_events
        self.max_body = cfg.max_body_bytes
        self.privacy = app.privacy
        self.reference = None
        if pure:
            from engine import parse_ref
            self.reference = parse_ref.encode_track
            self.reference_batch = parse_ref.encode_batch
        self.events = 0

    def __dealloc__(self):
        buf_free(&self.scratch)
        buf_free(&self.out)

    # ---- routing ---------------------------------------------------------
    cdef int claim(self, HttpConnection conn) except -1:
        cdef bytes url = conn.url, method = conn.method
        cdef int m, route
        if url is None or method is None:
            return 0
        if method == b"GET":
            m = M_GET
        elif method == b"HEAD":
            m = M_HEAD
        elif method == b"POST":
            m = M_POST
        else:
            return 0
        if _under(url, self.tr_prefix):
            if _is_socket(url, self.tr_prefix):
                return 0                 # /tr/vN/ws: the app's WebSocket
            route = R_TR
        elif m == M_POST:
            return 0                     # POST /img, /rdr: the app answers 405
        elif _under(url, self.img_prefix):
            route = R_IMG
        elif _under(url, self.rdr_prefix):
            route = R_RDR
        else:
            return 0
        conn.route = route | (m << 4)
        return 1

    # ---- answering -------------------------------------------------------
    cdef int answer(self, HttpConnection conn, bint keep) except -1:
        cdef double started = _mono()
        cdef int route = conn.route & 0xF, method = conn.route >> 4, status
        cdef Outcome res
        cdef Ticket ticket = None
        cdef str ip = conn.client_ip, store_ip
        cdef bytes vid = None
        cdef object refused, decision
        if self.resolver is not None:
            ip = self.resolver.resolve(ip, {b"x-forwarded-for": conn.forwarded_for,
                                            b"forwarded": conn.forwarded}
                                       if conn.forwarded_for or conn.forwarded else {})
        if self.limiting:
            refused = self._limited(ip, keep)
            if refused is not None:
                return self._refuse(conn, route, 429, refused, started)
        store_ip, self.spooling, self.cookie_ok = ip, method != M_HEAD, True
        if self.privacy is not None:
            decision = self.privacy.decide(ip, conn.dnt, conn.gpc, conn.cookie,
                                           conn.user_agent, conn.origin)
            store_ip, vid, self.cookie_ok = decision.ip, decision.vid, decision.set_cookie
            if decision.drop:
                self.spooling = False
        if self.spooling and not (self.spool.healthy and
                                  self.spool.bytes_used() < 0.9 * self.spool.max_bytes):
            return self._refuse(conn, route, 503, self.app.unavailable_response(), started)
        try:
            ticket = self._record(conn, ip, store_ip, vid, method, &res, keep)
        except BatchTooLarge as exc:
            return self._refuse(conn, route, 413,
                                self.app.error_response(413, str(exc)), started)
        except ParseError as exc:
            return self._refuse(conn, route, 400,
                                self.app.error_response(400, str(exc)), started)
        except BodyRefused as exc:
            return self._refuse(conn, route, exc.status,
                                self.app.error_response(exc.status, exc.text), started)
        except RateLimited as exc:
            return self._refuse(conn, route, 429, exc.answer, started)
        status = 302 if route == R_RDR else 200
        conn.answer_c(ticket, self._response(conn, route, method, &res, keep), keep)
        self._count(route, status, _mono() - started)
        return 0

    cdef object _limited(self, str ip, bint keep):
        cdef int wait = self.shared.allow(TRACK, ip, self.rate[0], self.rate[1],
                                          self.rate[2], self.rate[3])
        if not wait:
            return None
        self.app.stats.rate_limited(CLASS_NAMES[TRACK])
        return responses.simple(429, self.date, "rate limited\n", close=not keep,
                                extra=b"Retry-After: %d\r\n" % wait)

    cdef int _refuse(self, HttpConnection conn, int route, int status, object answer,
                     double started) except -1:
        keep = status != 400 and status != 503 and b"Connection: close" not in answer
        conn.answer_c(None, answer, keep)
        self.app.stats.answered(_ROUTE_NAMES[route], status, _mono() - started)
        return 0

    cdef Ticket _record(self, HttpConnection conn, str limit_ip, str ip, bytes vid,
                        int method, Outcome* res, bint keep):
        """Parse the request into the spool (HEAD, or dropped by DoNotTrack:
        into scratch); the ticket its answer waits on (None when not
        spooled). ``ip`` is the address stored (anonymised or not),
        ``limit_ip`` the real one the rate limit counts; ``vid``, when not
        None, replaces the cookie's visitor (the cookieless id)."""
        cdef bytes url = conn.url, path, query = None, body = None, cookie = None
        cdef const char* u = PyBytes_AS_STRING(url)
        cdef const char* q = <const char*>memchr(u, b'?', PyBytes_GET_SIZE(url))
        cdef Py_ssize_t start
        cdef Ticket ticket
        if q == NULL:
            path = url
        else:
            path = url[:q - u]
            query = url[q - u + 1:]
        self._path, self._query = path, query   # alive until the answer is built
        if vid is not None:
            cookie = vid
        elif conn.cookie is not None:
            cookie = cookie_vid_c(PyBytes_AS_STRING(conn.cookie), PyBytes_GET_SIZE(conn.cookie))
        if method == M_POST:
            body = b"".join(conn.body) if conn.body is not None else b""
            if conn.content_encoding is not None:
                body = inflate(body, conn.content_encoding, self.max_body)
            if _is_array(body):
                return self._record_batch(conn, limit_ip, ip, path, query, body, cookie,
                                          res, keep)
        if self.reference is not None:
            return self._record_reference(path, query, body, ip, conn, cookie, method, res)
        if not self.spooling:
            self.scratch.len = 0
            self.encoder.encode(&self.scratch, path, query, body, ip, conn.user_agent,
                                conn.accept_language, cookie, _now_ms(), self.ids, res)
            return None
        start = self.spool.begin()
        try:
            self.encoder.encode(&self.spool.open_group, path, query, body, ip,
                                conn.user_agent, conn.accept_language, cookie, _now_ms(),
                                self.ids, res)
        except BaseException:
            self.spool.rollback(start)
            raise
        ticket = self.spool.finish(start)
        self.events += 1
        return ticket

    cdef Ticket _record_batch(self, HttpConnection conn, str limit_ip, str ip, bytes path,
                              bytes query, bytes body, bytes cookie, Outcome* res, bint keep):
        """A JSON array body: one event per element, all or nothing. Every
        element is parsed (into scratch) before any reaches the spool; the
        answer waits on the last record's group (groups are written in
        order). The cookie is the first element's visitor."""
        cdef list items = batch_items(body, self.max_batch)
        cdef Py_ssize_t i
        cdef Ticket ticket = None
        cdef int64_t now = _now_ms()
        if self.limiting:
            for i in range(len(items) - 1):     # one token per event (the first: answer)
                refused = self._limited(limit_ip, keep)
                if refused is not None:
                    raise RateLimited(refused)
        if self.reference is not None:
            records = self.reference_batch(path, query, body, ip, conn.user_agent,
                                           conn.accept_language, cookie, now, self.ids,
                                           self.url_filter, max_events=self.max_batch)
            self._outcome_of(records[0], res)
            if not self.spooling:
                return None
            for data in records:
                ticket = self.spool.append(data)
            self.events += len(records)
            return ticket
        return self._spool_items(items, query, ip, conn.user_agent, conn.accept_language,
                                 cookie, now, res, self.spooling)

    cdef Ticket _spool_items(self, list items, bytes query, str ip, bytes user_agent,
                             bytes accept_language, bytes cookie, int64_t now, Outcome* res,
                             bint spooling):
        """Every element parsed (into scratch) before any reaches the spool
        (none does unless ``spooling``); the ticket of the last record's
        group (groups are written in order)."""
        cdef list ends = []
        cdef Outcome each
        cdef Py_ssize_t i, start, at = 0
        cdef Ticket ticket = None
        self.scratch.len = 0
        for i in range(len(items)):
            self.encoder.encode_batch_item(&self.scratch, i, items[i], query, ip,
                                           user_agent, accept_language, cookie,
                                           now, self.ids, &each)
            ends.append(self.scratch.len)
            if i == 0:
                res[0] = each
            if each.new_visitor:             # the rest of the batch is this visitor's
                cookie = _uuid_str(each.vid).encode()
        res.redirect, res.redirect_len = NULL, -1
        if not spooling:
            return None
        for end in ends:
            start = self.spool.begin()
            buf_reserve(&self.spool.open_group, end - at)
            memcpy(self.spool.open_group.data + self.spool.open_group.len,
                   self.scratch.data + at, end - at)
            self.spool.open_group.len += end - at
            ticket = self.spool.finish(start)
            at = end
        self.events += len(ends)
        return ticket

    # ---- for the WebSocket (engine/ingest/socket.py) ----------------------
    def track_items(self, list items, str ip, user_agent, accept_language, cookie_vid):
        """Spool a list of event objects (one WebSocket frame), all or
        nothing; the ticket of their group. ParseError names a bad element."""
        cdef Outcome res
        if self.reference is not None:
            from engine import parse_ref, record
            import orjson
            ticket = None
            for data in self.reference_batch(None, None, orjson.dumps(items), ip, user_agent,
                                             accept_language, cookie_vid, _now_ms(),
                                             self.ids, self.url_filter,
                                             max_events=self.max_batch):
                ticket = self.spool.append(data)
                self.events += 1
            return ticket
        return self._spool_items(items, None, ip, user_agent, accept_language, cookie_vid,
                                 _now_ms(), &res, True)

    def accepting(self):
        return self.spool.healthy and self.spool.bytes_used() < 0.9 * self.spool.max_bytes

    def tokens(self, str ip, int n):
        """Take ``n`` rate-limit tokens for ``ip`` (one per event); 0, or the
        seconds to wait when the limit refuses (tokens taken so far stay taken)."""
        cdef int i, wait
        if not self.limiting:
            return 0
        for i in range(n):
            wait = self.shared.allow(TRACK, ip, self.rate[0], self.rate[1],
                                     self.rate[2], self.rate[3])
            if wait:
                return wait
        return 0

    def new_vid(self):
        return self.ids.new()

    cdef int _outcome_of(self, bytes data, Outcome* res) except -1:
        """The answer's outcome from a reference record (pure mode)."""
        memcpy(res.vid, PyBytes_AS_STRING(data) + 26, 16)
        res.new_visitor = (PyBytes_AS_STRING(data)[1] & 2) != 0
        res.redirect, res.redirect_len = NULL, -1
        return 0

    cdef Ticket _record_reference(self, bytes path, bytes query, bytes body, str ip,
                                  HttpConnection conn, bytes cookie, int method,
                                  Outcome* res):
        """TRACKER_PURE_PARSE=1: the reference parser's record, same spool."""
        from engine import record
        data = self.reference(path, query, body, ip, conn.user_agent, conn.accept_language,
                              cookie, _now_ms(), self.ids, self.url_filter)
        event = record.decode(data)
        memcpy(res.vid, PyBytes_AS_STRING(<bytes>data) + 26, 16)
        res.new_visitor = bool(event.get("new_visitor"))
        redirect = event["params"].get("redirect")
        self._keep_redirect = None if redirect is None else redirect.encode("utf-8", "surrogatepass")
        if self._keep_redirect is None:
            res.redirect, res.redirect_len = NULL, -1
        else:
            res.redirect = PyBytes_AS_STRING(self._keep_redirect)
            res.redirect_len = PyBytes_GET_SIZE(self._keep_redirect)
        if not self.spooling:
            return None
        self.events += 1
        return self.spool.append(data)

    cdef bytes _response(self, HttpConnection conn, int route, int method, Outcome* res,
                         bint keep):
        cdef Buf* b = &self.out
        cdef bytes origin = conn.origin, location = None
        cdef bint cookie = self.cookie_ok and not (method == M_HEAD and res.new_visitor)
        cdef bytes date = self.date.value
        if route == R_RDR:
            location = self._location(res)
        b.len = 0
        buf_reserve(b, 512 + (PyBytes_GET_SIZE(origin) if origin is not None else 0)
                    + (PyBytes_GET_SIZE(location) if location is not None else 0)
                    + PyBytes_GET_SIZE(self.debug_header))
        _add(b, _FOUND if route == R_RDR else _OK)
        if PyBytes_GET_SIZE(self.debug_header):
            _add(b, self.debug_header)
        _add(b, date)
        _add(b, _SERVER)
        _add(b, _GIF_HEAD if route == R_IMG else _EMPTY)
        if cookie:
            _add(b, _COOKIE)
            _add_uuid(b, res.vid)
            _add(b, _COOKIE_END_TLS if conn.tls else _COOKIE_END)
        if origin is not None and header_safe(PyBytes_AS_STRING(origin),
                                              PyBytes_GET_SIZE(origin)) \
                and origin != b"null":
            _add(b, _CORS)
            _add(b, origin)
            _add(b, _CORS_END)
        _add(b, _NO_STORE)
        if location is not None:
            _add(b, _LOCATION)
            _add(b, location)
            _add_raw(b, b"\r\n", 2)
        if not keep:
            _add(b, _CLOSE)
        _add_raw(b, b"\r\n", 2)
        if route == R_IMG and method != M_HEAD:
            _add(b, _PIXEL)
        return PyBytes_FromStringAndSize(b.data, b.len)

    cdef bytes _location(self, Outcome* res):
        """Where /rdr sends the visitor: the redirect parameter when its host
        is allowed (engine/ingest/redirect.py), else DefaultRedirect."""
        cdef str target = None
        cdef bytes location
        if res.redirect_len >= 0:
            target = PyUnicode_DecodeUTF8(res.redirect, res.redirect_len, "surrogatepass")
        location = safe_redirect(target, self.redirect_hosts,
                                 self.default_redirect).encode("utf-8", "replace")
        if not header_safe(PyBytes_AS_STRING(location), PyBytes_GET_SIZE(location)):
            location = self.default_redirect.encode("latin-1", "replace")
        return location

    # ---- tracking for other routes (proxy, static) -----------------------
    def track(self, path, query, ip, user_agent, accept_language, cookie, vid=None):
        """Spool an event for a proxied or static request (not an answer of
        its own: nothing waits for the group); ``vid`` (bytes), when given,
        is its visitor instead of the cookie's. Returns (vid, new visitor),
        or None when the spool does not accept events now."""
        cdef Outcome res
        cdef Py_ssize_t start
        cdef bytes cookie_vid = None
        if not (self.spool.healthy and self.spool.bytes_used() < 0.9 * self.spool.max_bytes):
            return None
        if vid is not None:
            cookie_vid = vid
        elif cookie is not None:
            cookie_vid = cookie_vid_c(PyBytes_AS_STRING(cookie), PyBytes_GET_SIZE(cookie))
        if self.reference is not None:
            data = self.reference(path, query, None, ip, user_agent, accept_language,
                                  cookie_vid, _now_ms(), self.ids, self.url_filter)
            self.spool.append(data)
            self.events += 1
            from engine import record
            event = record.decode(data)
            return event["vid"], bool(event.get("new_visitor"))
        start = self.spool.begin()
        try:
            self.encoder.encode(&self.spool.open_group, path, query, None, ip, user_agent,
                                accept_language, cookie_vid, _now_ms(), self.ids, &res)
        except BaseException:
            self.spool.rollback(start)
            raise
        self.spool.finish(start)
        self.events += 1
        self.scratch.len = 0
        buf_reserve(&self.scratch, 36)
        _add_uuid(&self.scratch, res.vid)
        return (PyBytes_FromStringAndSize(self.scratch.data, 36).decode("ascii"),
                bool(res.new_visitor))

    # ---- metrics ---------------------------------------------------------
    cdef void _count(self, int route, int status, double seconds) noexcept:
        cdef int i = 0
        self.counts[route][0 if status == 200 else 1] += 1
        while i < NBUCKETS - 1 and seconds > _BOUNDS[i]:
            i += 1
        self.buckets[route][i] += 1
        self.seconds[route] += seconds

    def drain_stats(self, stats):
        """Move the counts since the last call into ``stats`` (WorkerStats)."""
        cdef int route, i
        for route in range(1, 4):
            name = _ROUTE_NAMES[route]
            for i, status in ((0, 200), (1, 302)):
                if self.counts[route][i]:
                    key = (name, status)
                    stats.requests[key] = stats.requests.get(key, 0) + self.counts[route][i]
                    self.counts[route][i] = 0
            if self.seconds[route] or any(self.buckets[route][i] for i in range(NBUCKETS)):
                slots = stats.latency.get(name)
                if slots is None:
                    slots = stats.latency[name] = [0] * NBUCKETS + [0.0]
                for i in range(NBUCKETS):
                    slots[i] += self.buckets[route][i]
                    self.buckets[route][i] = 0
                slots[NBUCKETS] += self.seconds[route]
                self.seconds[route] = 0.0
        stats.events += self.events
        self.events = 0


class RateLimited(Exception):
    """A batch over the rate limit (one token per event): its 429 answer."""

    def __init__(self, answer):
        super().__init__("rate limited")
        self.answer = answer


cdef bint _is_array(bytes body) noexcept:
    """Does the JSON body start with "[" (a batch)?"""
    cdef const char* p = PyBytes_AS_STRING(body)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(body)
    for i in range(n):
        if p[i] == b'[':
            return True
        if p[i] != b' ' and p[i] != b'\t' and p[i] != b'\n' and p[i] != b'\r':
            return False
    return False


cdef bint _is_socket(bytes url, bytes prefix) noexcept:
    """``url``'s path is ``prefix`` + "/ws" (the WebSocket route)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(prefix)
    cdef const char* u = PyBytes_AS_STRING(url)
    if PyBytes_GET_SIZE(url) < n + 3 or memcmp(u + n, b"/ws", 3) != 0:
        return False
    return PyBytes_GET_SIZE(url) == n + 3 or u[n + 3] == b'?'


cdef bint _under(bytes url, bytes prefix):
    """``url``'s path is ``prefix`` or below it (``/tr/v1``, ``/tr/v1/...``,
    ``/tr/v1?...``)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(prefix)
    cdef const char* u = PyBytes_AS_STRING(url)
    cdef char c
    if PyBytes_GET_SIZE(url) < n or memcmp(u, PyBytes_AS_STRING(prefix), n) != 0:
        return False
    if PyBytes_GET_SIZE(url) == n:
        return True
    c = u[n]
    return c == b'/' or c == b'?'

