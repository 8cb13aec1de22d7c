"""Admission: whether a connection or a request may be served at all.

One object per worker, shared by every listener's app: the node-wide
connection count (``MaximumConnections``, counted in shared memory across
workers), the client address (``TrustedProxies``), the token-bucket rate
limits per route class (``RateLimit``) and, on proxied routes, the daily
per-IP cap (``ProxyDailyLimit``). The compiled tracking routes read its
settings and take tokens themselves (engine/ingest/_track.pyx).
"""
from engine.http import responses
from engine.limits.clientip import ClientIP
from engine.limits.policy import CLASS_NAMES, PROXY, any_enabled


class Admission:
    def __init__(self, config, shared, conn_slot, stats, date):
        self.shared = shared            # node-wide limits (engine.limits._bucket)
        self.conn_slot = conn_slot      # this worker's connection counter
        self.max_conns = config.maximum_connections
        self.client_ip = ClientIP(config.trusted_proxies)
        self.rate_params = config.rate_limits
        self.limited_classes = tuple(p[1] > 0 or p[3] > 0 for p in self.rate_params)
        self.limiting = any_enabled(self.rate_params)
        self.daily = None               # ProxyDailyLimit checker (engine.limits.daily), if set
        self.daily_key = None           # ip -> the address as stored (IPAnonymize), if on
        self.stats = stats
        self.date = date

    # ---- connections -----------------------------------------------------
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

    # ---- requests --------------------------------------------------------
    def refusal(self, conn, req, cls, keep):
        """Resolve the client address into ``req.client_ip``; (429, answer)
        when a limit refuses the request, else None."""
        ip = conn.client_ip
        if self.client_ip.networks:
            ip = self.client_ip.resolve(ip, req.headers)
        req.client_ip = ip
        wait = self.limiting and self.limited_classes[cls] and \
            self.shared.allow(cls, ip, *self.rate_params[cls])
        if wait:
            self.stats.rate_limited(CLASS_NAMES[cls])
            return 429, responses.simple(429, self.date, "rate limited\n", close=not keep,
                                         extra=b"Retry-After: %d\r\n" % wait)
        if cls == PROXY and self.daily is not None and not self.daily.allowed(
                ip if self.daily_key is None else self.daily_key(ip)):
            self.stats.rate_limited("daily")
            return 429, responses.simple(429, self.date, "API Limit Reached", close=not keep)
        return None
