"""Routing and the handlers of DESIGN.md §2 that run in Python, for one worker.

The tracking routes (/tr, /img, /rdr with GET, HEAD and POST) are answered in
compiled code (``TrackRoutes``, engine/ingest/_track.pyx) straight from the
connection; this app answers everything else: CORS preflights and wrong
methods on the tracking routes, the service routes, static files, the
reverse proxy, and the refusals (429, 503, 400). Proxied and static
requests are tracked through ``TrackRoutes.track`` into the same spool.
"""
import os
import traceback
from time import perf_counter
from urllib.parse import quote_from_bytes

import orjson

from engine import metrics
from engine.http import responses
from engine.ingest import privacy
from engine.ingest.cors import preflight
from engine.limits.admission import Admission
from engine.limits.policy import PROXY, SERVICE, STATIC, TRACK
from engine.logs import log
from engine.ingest.redirect import normalise_hosts

COOKIE_MAX_AGE = 31536000  # one year
JSON = b"application/json"


def erase_path(version):
    return b"/privacy/" + version + b"/erase"


class TrackerApp:
    """What ``HttpConnection`` calls (``admit_connection``, ``connection_closed``,
    ``route_head``, ``handle``, ``error_response``, ``count_error``,
    ``internal_error``, ``unavailable_response``) and reads (``fast``: the
    compiled routes). ``attach`` gives it the spool and the compiled routes
    once the worker has opened them."""

    def __init__(self, config, stats, registry, shared, conn_slot, worker_index=0, board=None):
        self.config = config
        self.board = board              # the worker board: store processes' sink health
        self.critical = sum(1 << i for i, e in enumerate(config.notify)
                            if isinstance(e, dict) and e.get("Critical") and i < 64)
        self.stats = stats
        self.registry = registry
        self.date = registry.date
        self.draining = False
        self.redirect_hosts = normalise_hosts(config.redirect_hosts)
        self.admission = Admission(config, shared, conn_slot, stats, self.date)
        # IPAnonymize / DoNotTrack / ConsentCookie, or None when all are off
        self.privacy = privacy.Privacy(config) if privacy.active(config) else None
        if config.ip_anonymize != "off":    # ``dailies`` holds the stored form of addresses
            self.admission.daily_key = self.privacy.stored_address
        self.shared = shared            # /status reads the node's connection count
        # Debug only: which worker answered ("index/pid"), for multi-worker tests.
        self.debug_header = (b"X-Tracker-Worker: %d/%d\r\n" % (worker_index, os.getpid())
                             if config.debug else b"")
        self.routes = self._route_table(config.api_prefix.encode())
        self.spool = None               # the SpoolWriter (engine/ingest/_spool.pyx)
        self.fast = None                # TrackRoutes (engine/ingest/_track.pyx)
        self.dashboard = None           # built on the first /dash/ request
        self.proxy = None               # ReverseProxy when ProxyUrl is set (engine.proxy)
        if config.proxy_url:
            from engine.proxy import ReverseProxy
            self.proxy = ReverseProxy(config, registry, stats, self.admission.client_ip)
        self.erase_route = None         # built on the first POST /privacy/vN/erase
        self.static = None              # StaticFiles when StaticDirectory is set
        if config.static_directory and os.path.isdir(config.static_directory):
            from engine.static import StaticFiles
            self.static = StaticFiles(config, self.date)

    def attach(self, spool, fast):
        self.spool = spool
        self.fast = fast

    def _route_table(self, version):
        tracked = {b"tr": ("track", self.track, TRACK), b"img": ("img", self.img, TRACK),
                   b"rdr": ("rdr", self.rdr, TRACK), b"pub": ("static", self.static_file, STATIC)}
        fixed = {b"/ping": ("ping", self.ping, SERVICE), b"/ready": ("ready", self.ready, SERVICE)}
        if self.config.dashboard_token and self.config.admin_address is None:
            fixed.update(dict.fromkeys((b"/dash/", b"/dash"), ("dashboard", self.dash, SERVICE)))
        if self.config.admin_address is None:   # else only on the admin port (admin.py)
            fixed.update({b"/status": ("status", self.status, SERVICE),
                          b"/metrics": ("metrics", self.metrics, SERVICE)})
            if self.config.erase_token:
                fixed[erase_path(version)] = ("erase", self.erase, SERVICE)
        self.version = version
        self.visit_path = b"/tr/" + version     # proxied/static visits parse as a bare track
        self.socket_path = b"/tr/" + version + b"/ws"
        return tracked, fixed

    # ---- connection hooks ------------------------------------------------
    def admit_connection(self, conn):
        return self.admission.admit_connection(conn)

    def connection_closed(self, conn):
        self.admission.connection_closed(conn)

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

    def handle(self, conn, req, keep):
        started = perf_counter()
        path, sep, query = req.url.partition(b"?")
        if not sep:
            query = None
        name, handler, cls = req.route or self._route(path)
        refused = self.admission.refusal(conn, req, cls, keep)
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
        if req.upgrade and req.url.partition(b"?")[0] == self.socket_path:
            return self.socket(conn, req)
        proxy = self.proxy
        if proxy is None:
            return None
        route = req.route = self._route(req.url.partition(b"?")[0])
        if route[2] != PROXY:
            return None
        keep = req.keep_alive and not conn.closing and not req.upgrade
        refused = self.admission.refusal(conn, req, PROXY, False)
        if refused is not None:
            self.stats.answered("proxy", refused[0], 0.0)
            return refused[1]
        visitor = self._visit(conn, req, b"proxy")
        cookie = b""
        if visitor is not None and visitor[1]:
            cookie = self._cookie(conn, visitor)
        upgrade = req.headers.get(b"upgrade") if req.upgrade else None
        return proxy.exchange(conn, req, keep, cookie, upgrade)

    def _visit(self, conn, req, kind):
        """Track a proxied or static request as an event whose url is the
        request's (absolute) URL. Its answer does not wait for the spool: it
        is not a tracking acknowledgement. Returns (vid, new visitor), or
        None when it was not tracked (HEAD, or the spool refuses events)."""
        if req.method == b"HEAD":
            return None
        host = req.headers.get(b"host") or b"localhost"
        url = (b"https://" if conn.tls else b"http://") + host + req.url
        query = b"url=" + quote_from_bytes(url, safe="").encode() + b"&etyp=" + kind
        if req.method != b"GET":
            query += b"&method=" + quote_from_bytes(req.method, safe="").encode()
        headers = req.headers
        ip, vid, set_cookie = req.client_ip, None, True
        if self.privacy is not None:
            decision = self.privacy.decide(ip, headers.get(b"dnt"), headers.get(b"sec-gpc"),
                                           headers.get(b"cookie"), headers.get(b"user-agent"),
                                           headers.get(b"origin"))
            if decision.drop:
                return None
            ip, vid, set_cookie = decision.ip, decision.vid, decision.set_cookie
        visitor = self.fast.track(self.visit_path, query, ip,
                                  headers.get(b"user-agent"), headers.get(b"accept-language"),
                                  headers.get(b"cookie"), vid)
        if visitor is None:
            self.stats.request(kind.decode() + "_untracked", 503)
        elif not set_cookie:
            return visitor[0], False
        return visitor

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

    # ---- tracking routes (what the compiled ones leave) --------------------
    def unavailable_response(self):
        """503 for an event that cannot be accepted now (queue or spool full,
        spool write failed): the client keeps it and retries."""
        return self._plain(503, "busy, retry\n", False, b"Retry-After: 1\r\n")

    def _cookie(self, conn, visitor):
        """Set-Cookie for a (vid, new visitor) that a proxied request made."""
        return b"Set-Cookie: vid=%s; Max-Age=%d; Path=/; SameSite=Lax%s\r\n" % (
            visitor[0].encode(), COOKIE_MAX_AGE, b"; Secure" if conn.tls else b"")

    def socket(self, conn, req):
        """/tr/vN/ws with an Upgrade: the WebSocket stream (engine/ingest/socket.py),
        or a refusal (bytes) when the client's address is over a limit."""
        from engine.ingest.socket import TrackSocket
        refused = self.admission.refusal(conn, req, TRACK, False)
        if refused is not None:
            self.stats.answered("socket", refused[0], 0.0)
            return refused[1]
        self.stats.answered("socket", 101, 0.0)
        return TrackSocket(self, conn, req)

    def track(self, conn, req, path, query, keep):
        """/tr with what TrackRoutes leaves: the CORS preflight, wrong methods,
        and /tr/vN/ws without an Upgrade."""
        if path == self.socket_path:
            return 426, self._plain(426, "upgrade to a WebSocket\n", keep,
                                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n")
        if req.method == b"OPTIONS":
            return 200, preflight(req, self.date, keep)
        return 405, self._plain(405, "method not allowed\n", keep,
                                b"Allow: GET, HEAD, POST, OPTIONS\r\n")

    def img(self, conn, req, path, query, keep):
        """/img and /rdr with a method TrackRoutes does not take."""
        return 405, self._plain(405, "method not allowed\n", keep, b"Allow: GET, HEAD\r\n")

    rdr = img

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

    def dash(self, conn, req, path, query, keep):
        """/dash/ (engine/ingest/dashboard.py), when DashboardToken is set."""
        if path == b"/dash":
            return 301, self._plain(301, "moved\n", keep, b"Location: /dash/\r\n")
        if self.dashboard is None:
            from engine.ingest.dashboard import Dashboard
            self.dashboard = Dashboard(self.config, self.date)
        return self.dashboard.handle(conn, req, query, keep)

    def ready(self, conn, req, path, query, keep):
        reason = self.not_ready_reason()
        if reason is not None:
            return 503, self._plain(503, reason + "\n", keep)
        return 200, self._plain(200, "ready\n", keep)

    def not_ready_reason(self):
        """Why /ready answers 503, or None when it answers 200 (also the
        ``tracker_ready`` gauge)."""
        if self.draining:
            return "draining"
        if self.spool is not None and not self.spool.accepting:
            return "spool full or failing"
        down = self.critical_down()
        if down:
            return "store down: %s" % ", ".join(down)
        return None

    def critical_down(self):
        """The Critical stores a store process reports failing (board slots)."""
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

    def erase(self, conn, req, path, query, keep):
        """POST /privacy/vN/erase (engine/ingest/erase_route.py)."""
        if self.erase_route is None:
            from engine.ingest.erase_route import EraseRoute
            self.erase_route = EraseRoute(self.config, self.date)
        return self.erase_route.handle(conn, req, keep)

    def metrics(self, conn, req, path, query, keep):
        self.stats.sync()
        body = metrics.exposition()
        return 200, responses.build(200, self.date, responses.NO_STORE, body=body,
                                    content_type=b"text/plain; version=0.0.4; charset=utf-8",
                                    close=not keep)
