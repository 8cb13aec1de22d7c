"""``/dash/``: the reports of ``tracker report`` as one HTML page.

Off unless ``DashboardToken`` is set. Served where the operator routes are:
on the admin port when ``AdminListen`` is set, else on the public port.
A request must carry the token as ``Authorization: Bearer <token>`` or as
the password of HTTP Basic auth (any user name; a browser asks for it);
anything else is 401. Answers are never cached (``Cache-Control:
no-store``) and the page loads nothing from elsewhere (a Content-Security-
Policy forbids it; it has no script).

The query string takes the report options: ``since``, ``until``, ``steps``
(funnel enames, comma-separated), ``outcome``, ``control``. The reports run
on a read-only connection to the embedded SQLite store, in a thread of the
worker (``Stream``), so the event loop keeps answering tracking requests
while they run; one dashboard request at a time per worker.

A built page is served again for ``DashboardCacheSeconds`` (per worker, per
query string; the page says when it was computed): every report over a
large store takes seconds, and a dashboard left open in a few browsers, or
reloaded, must not cost that each time.
"""
import asyncio
import base64
import binascii
import datetime
import hmac
import time
from urllib.parse import parse_qs

from engine.http import responses
from engine.http.stream import Stream
from engine.logs import log

PATH = b"/dash/"
HTML = b"text/html; charset=utf-8"
HEADERS = (responses.NO_STORE
           + b"X-Content-Type-Options: nosniff\r\n"
           + b"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
             b"form-action 'self'\r\n")
CHALLENGE = (b'WWW-Authenticate: Basic realm="tracker dashboard", charset="UTF-8"\r\n'
             + responses.NO_STORE)
OPTIONS = ("since", "until", "steps", "outcome", "control")
CACHED_PAGES = 16           # per worker; the oldest goes first


def sqlite_path(config):
    for entry in config.notify:
        if isinstance(entry, dict) and entry.get("Service") == "sqlite":
            return entry.get("Path")
    return None


class Dashboard:
    def __init__(self, config, date):
        self.token = config.dashboard_token.encode()
        self.path = sqlite_path(config)
        self.date = date
        self.executor = None
        self.cache_seconds = float(config.dashboard_cache_seconds)
        self.pages = {}             # sorted params -> (built at, status, body)

    def authorised(self, req):
        given = req.headers.get(b"authorization") or b""
        scheme, _, credentials = given.strip().partition(b" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == b"bearer":
            return hmac.compare_digest(credentials, self.token)
        if scheme == b"basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(decoded.partition(b":")[2], self.token)
        return False

    def handle(self, conn, req, query, keep):
        """(status, bytes or a Stream)."""
        if req.method not in (b"GET", b"HEAD"):
            return 405, self._text(405, "method not allowed\n", keep, b"Allow: GET, HEAD\r\n")
        if not self.authorised(req):
            return 401, self._text(401, "the dashboard needs its token (Bearer, or Basic "
                                   "auth with the token as password)\n", keep, CHALLENGE)
        if self.path is None:
            return 404, self._text(404, "the dashboard reads the embedded store; no sqlite "
                                   "entry in Notify (`tracker report` also reads a "
                                   "Cassandra store)\n", keep)
        params = _params(query)
        return 200, DashboardAnswer(self, params, keep, req.method == b"HEAD")

    def cached_build(self, params):
        """``build``, or the page built for the same params less than
        ``cache_seconds`` ago (in the dashboard's thread, one at a time)."""
        key = tuple(sorted(params.items()))
        now = time.monotonic()
        hit = self.pages.get(key)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1], hit[2]
        status, body = self.build(params)
        if self.cache_seconds > 0 and status == 200:
            self.pages.pop(key, None)
            self.pages[key] = (now, status, body)
            while len(self.pages) > CACHED_PAGES:
                self.pages.pop(next(iter(self.pages)))
        return status, body

    def build(self, params):
        """(status, HTML or text): the page, in the dashboard's thread."""
        from engine.reports import ReportError, open_store, page, run
        from engine.reports.timerange import RangeError, parse_range
        try:
            start, end = parse_range(params.get("since"), params.get("until"))
            steps = [s.strip() for s in (params.get("steps") or "").split(",") if s.strip()]
            conn = open_store(self.path)
            try:
                reports = {kind: run(kind, conn, start, end, steps=steps,
                                     outcome=params.get("outcome") or None,
                                     control=params.get("control") or None)
                           for kind in ("traffic", "experiments", "loops", "pages",
                                        "referrers", "campaigns")}
                if steps:
                    reports["funnels"] = run("funnels", conn, start, end, steps=steps)
            finally:
                conn.close()
        except (ReportError, RangeError) as exc:
            return 400, f"{exc}\n"
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return 200, page.page(reports, params, now)

    def _text(self, status, text, keep, extra=b""):
        return responses.build(status, self.date, extra or responses.NO_STORE,
                               body=text.encode(), close=not keep)


def _params(query):
    if not query:
        return {}
    found = parse_qs(query.decode("utf-8", "replace"), keep_blank_values=False)
    return {k: v[0] for k, v in found.items() if k in OPTIONS}


class DashboardAnswer(Stream):
    """Builds the page in the dashboard's thread once it is this
    connection's turn to answer, then writes it."""

    def __init__(self, dashboard, params, keep, head):
        self.dashboard, self.params, self.keep, self.head = dashboard, params, keep, head
        self.conn = None

    def start(self, conn):
        self.started = True
        self.conn = conn
        asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        dash = self.dashboard
        if dash.executor is None:
            from engine.system.threads import named_executor
            dash.executor = named_executor("dashboard")
        try:
            status, body = await asyncio.get_running_loop().run_in_executor(
                dash.executor, dash.cached_build, self.params)
        except Exception as exc:        # a broken store file must not take the worker down
            log.error("dashboard failed", error=repr(exc))
            status, body = 500, "the dashboard failed; see the collector's log\n"
        if self.conn is None:
            return                      # the client went away
        ctype = HTML if status == 200 else b"text/plain; charset=utf-8"
        self.conn.transport.write(responses.build(
            status, dash.date, HEADERS, body=body.encode(), content_type=ctype,
            close=not self.keep, head=self.head))
        self.conn.stream_finished(self, self.keep)

    def close(self):
        self.conn = None
