"""Routing and the handlers of DESIGN.md §2, for one worker.

``TrackerApp.handle`` turns a parsed request into response bytes,
synchronously: tracking parses (Cython), appends the event's record to the
spool's open group and answers once the group is written
(engine/ingest/commit.py); the store processes write the stores.
"""
import os
import time
import traceback
from time import perf_counter
from urllib.parse import quote_from_bytes

import orjson

from engine import metrics
from engine.http import responses
from engine.limits.clientip import ClientIP
from engine.errors import ParseError
from engine.limits.policy import CLASS_NAMES, PROXY, SERVICE, STATIC, TRACK, any_enabled
from engine.logs import log
from engine.ingest.redirect import normalise_hosts, safe_redirect
from engine import record
from engine.spool import SpoolFull

COOKIE_MAX_AGE = 31536000  # one year
JSON = b"application/json"
GIF = b"image/gif"
PREFLIGHT_METHODS = b"Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"


def cookie_value(raw, name=b"vid"):
    """The value of cookie ``name`` in a Cookie header, or None."""
    for part in raw.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"').decode("latin-1")
    return None


def _header_safe(value):
    return value is not None and len(value) < 2048 and all(32 <= c < 127 for c in value)


class TrackerApp:
    def __init__(self, config, stats, parser, ids, registry, shared, conn_slot,
                 worker_index=0, board=None):
        self.config = config
        self.board = board              # the worker board: store processes' sink health
        self.critical = sum(1 << i for i, e in enumerate(config.notify)
                            if isinstance(e, dict) and e.get("Critical") and i < 64)
        self.stats = stats
        self.parse = parser.parse_track
        self.encode_track = parser.encode_track          # request -> spool record
        self.decode = getattr(parser, "decode", record.decode)
        self.ids = ids
        self.registry = registry
        self.date = registry.date
        self.draining = False
        self.url_filter = config.url_filter
        self.redirect_hosts = normalise_hosts(config.redirect_hosts)
        self.max_conns = config.maximum_connections
        self.shared = shared            # node-wide limits (engine.limits._bucket)
        self.conn_slot = conn_slot
        self.client_ip = ClientIP(config.trusted_proxies)
        self.rate_params = config.rate_limits
        self.limited_classes = tuple(p[1] > 0 or p[3] > 0 for p in self.rate_params)
        self.limiting = any_enabled(self.rate_params)
        # Debug only: which worker answered ("index/pid"), for multi-worker tests.
        self.debug_header = (b"X-Tracker-Worker: %d/%d\r\n" % (worker_index, os.getpid())
                             if config.debug else b"")
        self.routes = self._route_table(config.api_prefix.encode())
        self.daily = None               # ProxyDailyLimit checker (engine.limits.daily), if set
        self.committer = None           # GroupCommitter (engine/ingest/commit.py)
        self.proxy = None               # ReverseProxy when ProxyUrl is set (engine.proxy)
        if config.proxy_url:
            from engine.proxy import ReverseProxy
            self.proxy = ReverseProxy(config, registry, stats, self.client_ip)
        self.static = None              # StaticFiles when StaticDirectory is set
        if config.static_directory and os.path.isdir(config.static_directory):
            from engine.static import StaticFiles
            self.static = StaticFiles(config, self.date)

    def _route_table(self, version):
        tracked = {b"tr": ("track", self.track, TRACK), b"img": ("img", self.img, TRACK),
                   b"rdr": ("rdr", self.rdr, TRACK), b"pub": ("static", self.static_file, STATIC)}
        fixed = {b"/ping": ("ping", self.ping, SERVICE), b"/ready": ("ready", self.ready, SERVICE),
                 b"/status": ("status", self.status, SERVICE),
                 b"/metrics": ("metrics", self.metrics, SERVICE)}
        self.version = version
        self.visit_path = b"/tr/" + version     # proxied/static visits parse as a bare track
        return tracked, fixed

    @property
    def commits(self):
        """Where answers wait for their spool group (HttpConnection reads it)."""
        return self.committer

    # ---- connection hooks ------------------------------------------------
    def admit_connection(self, conn):
        """Count the connection node-wide; refuse it past MaximumConnections."""
        total = self.shared.conn_add(self.conn_slot, 1)
        conn.counted = True
        if self.max_conns and total > self.max_conns:
            self.shared.conn_add(self.conn_slot, -1)
            conn.counted = False
            self.stats.request("connection", 503)
            return responses.simple(503, self.date, "too many connections\n", close=True,
                                    extra=b"Retry-After: 1\r\n")
        return None

    def connection_closed(self, conn):
        if conn.counted:
            conn.counted = False
            self.shared.conn_add(self.conn_slot, -1)

    def error_response(self, status, text):
        return responses.simple(status, self.date, text + "\n", close=True)

    def count_error(self, status):
        self.stats.request("error", status)

    def internal_error(self, conn, exc):
        log.error("request handler failed", error=repr(exc),
                  trace="".join(traceback.format_exception(exc))[-2000:])

    # ---- dispatch --------------------------------------------------------
    def _route(self, path):
        """(name, handler, route class) for a URL path."""
        tracked, fixed = self.routes
        route = fixed.get(path)
        if route is None:
            end = path.find(b"/", 1)
            first = path[1:end] if end > 0 else path[1:]
            route = tracked.get(first)
            if route is not None and not self._version_ok(path, end):
                route = None
        if route is None:
            route = ("other", self.not_found, PROXY)
        return route

    def _refusal(self, conn, req, cls, keep):
        """Resolve the client IP; (429, response) if a limit refuses it, else None."""
        ip = conn.client_ip
        if self.client_ip.networks:
            ip = self.client_ip.resolve(ip, req.headers)
        req.client_ip = ip
        wait = self.limiting and self.limited_classes[cls] and \
            self.shared.allow(cls, ip, *self.rate_params[cls])
        if wait:
            self.stats.rate_limited(CLASS_NAMES[cls])
            return 429, self._plain(429, "rate limited\n", keep, b"Retry-After: %d\r\n" % wait)
        if cls == PROXY and self.daily is not None and not self.daily.allowed(ip):
            self.stats.rate_limited("daily")
            return 429, self._plain(429, "API Limit Reached", keep)
        return None

    def handle(self, conn, req, keep):
        started = perf_counter()
        path, sep, query = req.url.partition(b"?")
        if not sep:
            query = None
        name, handler, cls = req.route or self._route(path)
        refused = self._refusal(conn, req, cls, keep)
        if refused is not None:
            status, response = refused
        else:
            try:
                status, response = handler(conn, req, path, query, keep)
            except Exception as exc:  # a handler bug must not take the worker down
                self.internal_error(conn, exc)
                status, response = 500, self._plain(500, "internal error\n", False)
        if self.debug_header and response.__class__ is bytes:
            response = response.replace(b"\r\n", b"\r\n" + self.debug_header, 1)
        self.stats.answered(name, status, perf_counter() - started)
        return response

    def route_head(self, conn, req):
        """At the end of a request head: a proxied request becomes a stream its
        body is fed to (or a refusal, as bytes); anything else returns None
        and is handled when its message is complete."""
        proxy = self.proxy
        if proxy is None:
            return None
        route = req.route = self._route(req.url.partition(b"?")[0])
        if route[2] != PROXY:
            return None
        keep = req.keep_alive and not conn.closing and not req.upgrade
        refused = self._refusal(conn, req, PROXY, False)
        if refused is not None:
            self.stats.answered("proxy", refused[0], 0.0)
            return refused[1]
        event = self._visit(conn, req, b"proxy")
        cookie = b""
        if event is not None and event.get("new_visitor"):
            cookie = self._cookie(conn, event)
        upgrade = req.headers.get(b"upgrade") if req.upgrade else None
        return proxy.exchange(conn, req, keep, cookie, upgrade)

    def _visit(self, conn, req, kind):
        """Track a proxied or static request as an event whose url is the
        request's (absolute) URL. Its answer does not wait for the spool: it
        is not a tracking acknowledgement. None when it could not be queued."""
        host = req.headers.get(b"host") or b"localhost"
        url = (b"https://" if conn.tls else b"http://") + host + req.url
        query = b"url=" + quote_from_bytes(url, safe="").encode() + b"&etyp=" + kind
        if req.method != b"GET":
            query += b"&method=" + quote_from_bytes(req.method, safe="").encode()
        event, refused = self._accept(conn, req, self.visit_path, query, None)
        req.wait_epoch = 0
        if event is None:
            self.stats.request(kind.decode() + "_untracked", refused[0])
        return event

    def not_found(self, conn, req, path, query, keep):
        return 404, self._plain(404, "not found\n", keep)

    def _version_ok(self, path, end):
        if end < 0:
            return False
        rest = path[end + 1:]
        v = self.version
        return rest == v or rest.startswith(v + b"/")

    def _plain(self, status, text, keep, extra=b""):
        return responses.simple(status, self.date, text, close=not keep, extra=extra)

    # ---- tracking --------------------------------------------------------
    def _accept(self, conn, req, path, query, body):
        """Parse and enqueue one event. Returns (event, None) or (None, response).
        A HEAD request is parsed (its answer has the GET's headers) but never
        tracked: mail scanners and link prefetchers probe with HEAD."""
        if req.method == b"HEAD":
            return self._parse(req, path, query, None), None
        committer = self.committer
        if not committer.accepting:
            return None, (503, self.unavailable_response())
        try:
            payload = self._record(req, path, query, body)
        except ParseError as exc:
            return None, (400, self._plain(400, str(exc) + "\n", False))
        event = self.decode(payload)    # what the answer needs (vid, redirect)
        try:                            # answered once the group is written
            req.wait_epoch = committer.append(payload)
        except SpoolFull:
            return None, (503, self.unavailable_response())
        return event, None

    def _parse(self, req, path, query, body):
        headers = req.headers
        raw_cookie = headers.get(b"cookie")
        ua = headers.get(b"user-agent")
        lang = headers.get(b"accept-language")
        return self.parse(
            path, query, body, req.client_ip,
            None if ua is None else ua.decode("utf-8", "replace"),
            None if lang is None else lang.decode("latin-1"),
            None if raw_cookie is None else cookie_value(raw_cookie),
            time.time_ns() // 1000000, self.ids, self.url_filter)

    def _record(self, req, path, query, body):
        """The spool record of a tracked request (engine/record.py), encoded
        from the same inputs ``_parse`` gives the parser, converted as
        ``parse_track`` converts them, so both agree byte for byte."""
        headers = req.headers
        raw_cookie = headers.get(b"cookie")
        ua = headers.get(b"user-agent")
        lang = headers.get(b"accept-language")
        cookie = None if raw_cookie is None else cookie_value(raw_cookie)
        return self.encode_track(
            path, query, body, req.client_ip,
            None if ua is None else ua.decode("utf-8", "replace").encode("utf-8", "replace"),
            None if lang is None else lang.decode("latin-1").encode("latin-1", "replace"),
            cookie.encode("ascii") if cookie is not None and cookie.isascii() else None,
            time.time_ns() // 1000000, self.ids, self.url_filter)

    def unavailable_response(self):
        """503 for an event that cannot be accepted now (queue or spool full,
        spool write failed): the client keeps it and retries."""
        return self._plain(503, "busy, retry\n", False, b"Retry-After: 1\r\n")

    def _cookie(self, conn, event):
        return b"Set-Cookie: vid=%s; Max-Age=%d; Path=/; SameSite=Lax%s\r\n" % (
            event["vid"].encode(), COOKIE_MAX_AGE, b"; Secure" if conn.tls else b"")

    def _tracking_headers(self, conn, req, event):
        if req.method == b"HEAD" and event.get("new_visitor"):
            cookie = b""    # a probe mints no visitor: nothing was tracked
        else:
            cookie = self._cookie(conn, event)
        return cookie + self._cors(req) + responses.NO_STORE

    def _cors(self, req):
        origin = req.headers.get(b"origin")
        if not _header_safe(origin) or origin == b"null":
            return b""
        # Echo the origin: browsers refuse "*" on credentialed requests.
        return (b"Access-Control-Allow-Origin: " + origin +
                b"\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n")

    def track(self, conn, req, path, query, keep):
        method = req.method
        if method == b"OPTIONS":
            return 200, self._preflight(req, keep)
        if method == b"GET" or method == b"HEAD":
            body = None
        elif method == b"POST":
            body = req.body or b""
        else:
            return 405, self._plain(405, "method not allowed\n", keep,
                                    b"Allow: GET, HEAD, POST, OPTIONS\r\n")
        event, refused = self._accept(conn, req, path, query, body)
        if refused:
            return refused
        return 200, responses.build(200, self.date, self._tracking_headers(conn, req, event),
                                    content_type=None, close=not keep)

    def _preflight(self, req, keep):
        asked = req.headers.get(b"access-control-request-headers")
        allow = asked if _header_safe(asked) else b"Content-Type"
        headers = (self._cors(req) + PREFLIGHT_METHODS +
                   b"Access-Control-Allow-Headers: " + allow + b"\r\n"
                   b"Access-Control-Max-Age: 86400\r\n")
        if b"Vary" not in headers:
            headers += b"Vary: Origin\r\n"
        return responses.build(200, self.date, headers, content_type=None, close=not keep)

    def img(self, conn, req, path, query, keep):
        if req.method not in (b"GET", b"HEAD"):
            return 405, self._plain(405, "method not allowed\n", keep, b"Allow: GET, HEAD\r\n")
        event, refused = self._accept(conn, req, path, query, None)
        if refused:
            return refused
        return 200, responses.build(200, self.date, self._tracking_headers(conn, req, event),
                                    body=responses.PIXEL_GIF, content_type=GIF,
                                    close=not keep, head=req.method == b"HEAD")

    def rdr(self, conn, req, path, query, keep):
        if req.method not in (b"GET", b"HEAD"):
            return 405, self._plain(405, "method not allowed\n", keep, b"Allow: GET, HEAD\r\n")
        event, refused = self._accept(conn, req, path, query, None)
        if refused:
            return refused
        target = safe_redirect(event["params"].get("redirect"), self.redirect_hosts,
                               self.config.default_redirect)
        location = target.encode("utf-8", "replace")
        if not _header_safe(location):
            location = self.config.default_redirect.encode("latin-1", "replace")
        headers = self._tracking_headers(conn, req, event) + b"Location: " + location + b"\r\n"
        return 302, responses.build(302, self.date, headers, content_type=None, close=not keep)

    def static_file(self, conn, req, path, query, keep):
        if self.static is None:
            return self.not_found(conn, req, path, query, keep)
        if req.method not in (b"GET", b"HEAD"):
            return 405, self._plain(405, "method not allowed\n", keep, b"Allow: GET, HEAD\r\n")
        if len(path) == len(b"/pub/") + len(self.version):  # "/pub/v1": files are under "/pub/v1/"
            location = path + b"/" + (b"?" + query if query is not None else b"")
            return 301, self._plain(301, "moved\n", keep, b"Location: " + location + b"\r\n")
        self._visit(conn, req, b"static")
        rel = path[len(b"/pub/") + len(self.version) + 1:]
        return self.static.serve(req, rel, keep, conn.tls)

    # ---- service routes --------------------------------------------------
    def ping(self, conn, req, path, query, keep):
        return 200, self._plain(200, "pong", keep)

    def ready(self, conn, req, path, query, keep):
        if self.draining:
            return 503, self._plain(503, "draining\n", keep)
        if not self.committer.accepting:
            return 503, self._plain(503, "spool full or failing\n", keep)
        down = self.critical_down()
        if down:
            return 503, self._plain(503, "store down: %s\n" % ", ".join(down), keep)
        return 200, self._plain(200, "ready\n", keep)

    def critical_down(self):
        """Names of the Critical Notify entries a store process fails to write."""
        if not self.critical or self.board is None:
            return []
        mask = self.board.sinks_down() & self.critical
        return [f"{i}-{e.get('Service')}" for i, e in enumerate(self.config.notify)
                if mask >> i & 1]

    def status(self, conn, req, path, query, keep):
        body = orjson.dumps([{"Key": "client", "Value": req.client_ip},
                             {"Key": "conns", "Value": self.shared.conn_total()}])
        return 200, responses.build(200, self.date, responses.NO_STORE, body=body,
                                    content_type=JSON, close=not keep)

    def metrics(self, conn, req, path, query, keep):
        self.stats.sync()
        body = metrics.exposition()
        return 200, responses.build(200, self.date, responses.NO_STORE, body=body,
                                    content_type=b"text/plain; version=0.0.4; charset=utf-8",
                                    close=not keep)
