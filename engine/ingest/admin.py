"""The admin listener (``AdminListen``): the routes an operator's tools use,
off the public port.

Prometheus deployments expect metrics on an internal address, as
node_exporter or nginx's stub_status are. With ``AdminListen`` set, every
worker also listens there (SO_REUSEPORT, plain HTTP: it is meant for a
private address) and answers ``/metrics``, ``/status``, ``/ready`` and
``/ping``, plus ``POST /privacy/v1/erase`` when ``EraseToken`` is set and the
dashboard, ``/dash/``, when ``DashboardToken`` is; the public ports
then answer ``/metrics`` and ``/status`` with 404, keeping ``/ping`` and
``/ready``, which load balancers need. Tracking routes are not served here.
Unset, the public port serves everything as the Go collector did, and the
supervisor warns at start that it does.
"""
from time import perf_counter

from engine.ingest.app import erase_path

ADMIN_ROUTES = (b"/metrics", b"/status", b"/ready", b"/ping")
PUBLIC_ONLY_WITHOUT_ADMIN = (b"/metrics", b"/status")


class AdminApp:
    """What ``HttpConnection`` calls on the admin port; the handlers are the
    worker's TrackerApp's, so the figures are the same as on the public port."""
    fast = None                 # no compiled routes here

    def __init__(self, app):
        self.app = app
        # /dash/ when DashboardToken is set (engine/ingest/dashboard.py)
        self.dash_routes = (dict.fromkeys((b"/dash/", b"/dash"), ("dashboard", app.dash))
                            if app.config.dashboard_token else {})
        self.routes = {b"/metrics": ("metrics", app.metrics),
                       b"/status": ("status", app.status),
                       b"/ready": ("ready", app.ready),
                       b"/ping": ("ping", app.ping)}
        if app.config.erase_token:
            self.routes[erase_path(app.version)] = ("erase", app.erase)

    def admit_connection(self, conn):
        return None             # not counted against MaximumConnections

    def connection_closed(self, conn):
        pass

    def route_head(self, conn, req):
        return None

    def handle(self, conn, req, keep):
        started = perf_counter()
        path, sep, query = req.url.partition(b"?")
        name, handler = self.routes.get(path) or self.dash_routes.get(path, ("admin_other", None))
        try:
            if handler is None:
                status, response = 404, self.app._plain(404, "not found\n", keep)
            else:
                status, response = handler(conn, req, path, query if sep else None, keep)
        except Exception as exc:   # a handler bug must not take the worker down
            self.app.internal_error(conn, exc)
            status, response = 500, self.app._plain(500, "internal error\n", False)
        self.app.stats.answered(name, status, perf_counter() - started)
        return response

    def error_response(self, status, text):
        return self.app.error_response(status, text)

    def unavailable_response(self):
        return self.app.unavailable_response()

    def count_error(self, status):
        self.app.count_error(status)

    def internal_error(self, conn, exc):
        self.app.internal_error(conn, exc)
