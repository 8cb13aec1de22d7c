"""``ProxyDailyLimit``: requests per client IP per UTC day on proxied routes.

Checked from a per-IP cache, never with a store query per request:
``allowed(ip)`` is synchronous and does no I/O. It answers from the IP's
``dailies`` total as last read from the store plus the requests this worker
let through since that read was sent. A request over the limit is refused
and not counted (it is not stored as an event either). When the read is older
than ``ttl`` seconds (or the IP is new) one background read for that IP is
started — at most one in flight per IP — so the store sees at most one query
per IP per ``ttl``. An IP not read yet is allowed until its first read lands
(fail-open: a store outage must not turn the node into a wall). Other
workers' requests reach the count through the store, within ``ttl`` plus the
batch flush interval.

The read is pluggable: an async callable ``read(ip, day) -> int`` giving the
stored total of ``ip`` on ``day`` (``utc_day``'s text). ``SQLiteDailyRead``
here needs only the database path and
``engine.store.sinks.cassandra.CassandraDailyRead`` only a session and keyspace, so
the checker never depends on a sink writing in the same process.

The one exception to "HTTP workers hold no store connection or store file":
the checker runs in the HTTP worker (it answers proxied requests there), so
that process keeps a read-only look at ``dailies`` — a read-only SQLite
connection, or a Cassandra session of its own. It never writes.
"""
import asyncio
import time

from engine.logs import log

MAX_IPS = 100_000


def utc_day(epoch_seconds=None):
    """The UTC day of ``epoch_seconds`` (default now) as ``"YYYY-MM-DD"``."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_seconds))


class DailyLimitChecker:
    def __init__(self, limit, read, ttl=10.0, max_ips=MAX_IPS, clock=time.monotonic):
        self.limit = int(limit)
        self.read = read
        self.ttl = ttl
        self.max_ips = max_ips
        self.clock = clock
        self.cache = {}          # ip -> [stored total, counted since read sent, read at, day]
        self.inflight = set()
        self.reads = 0

    def allowed(self, ip):
        """Count one request of ``ip``; False (not counted) once it is at today's limit."""
        day = utc_day()
        entry = self.cache.get(ip)
        if entry is None or entry[3] != day:
            if len(self.cache) >= self.max_ips:
                self.cache.clear()
            entry = self.cache[ip] = [0, 0, None, day]
        if entry[0] + entry[1] >= self.limit:
            self._maybe_refresh(ip, entry, day)
            return False
        entry[1] += 1
        self._maybe_refresh(ip, entry, day)
        return True

    def _maybe_refresh(self, ip, entry, day):
        stale = entry[2] is None or self.clock() - entry[2] >= self.ttl
        if stale and ip not in self.inflight:
            self.inflight.add(ip)
            asyncio.get_running_loop().create_task(self._refresh(ip, day))

    async def _refresh(self, ip, day):
        asked_at = self.clock()
        entry = self.cache.get(ip)
        counted_before = entry[1] if entry is not None else 0
        try:
            self.reads += 1
            total = await self.read(ip, day)
        except Exception as exc:   # keep the old value; try again after ttl
            log.warning("daily limit read failed", ip=ip, error=repr(exc)[:200])
            entry = self.cache.get(ip)
            if entry is not None:
                entry[2] = asked_at
            return
        finally:
            self.inflight.discard(ip)
        entry = self.cache.get(ip)
        if entry is not None and entry[3] == day:
            # Requests let through after the read was sent are not in it yet;
            # the ones before it are (give or take one batch flush interval).
            entry[0], entry[1], entry[2] = total, max(0, entry[1] - counted_before), asked_at


class SQLiteDailyRead:
    """Reads ``dailies`` of the embedded store on its own read-only
    connection in a thread, so the event loop never waits on the file."""

    def __init__(self, path):
        self.path = path
        self._conn = None

    def _read_sync(self, ip, day):
        if self._conn is None:
            from engine.store.sinks.sqlite import open_db   # only where the limit is on
            self._conn = open_db(self.path, readonly=True)
        row = self._conn.execute("SELECT total FROM dailies WHERE ip = ? AND day = ?",
                                 (ip, day)).fetchone()
        return row[0] if row else 0

    async def __call__(self, ip, day):
        return await asyncio.get_running_loop().run_in_executor(None, self._read_sync, ip, day)


class DailyLimitUnavailable(ValueError):
    """ProxyDailyLimit is set but its checker cannot be built."""


def build_checker(config):
    """The checker for ``ProxyDailyLimitChecker`` ("sqlite" by default), or None."""
    if config.proxy_daily_limit <= 0:
        return None
    kind = config.proxy_daily_limit_checker or "sqlite"
    matching = [e for e in config.notify if isinstance(e, dict) and e.get("Service") == kind]
    if not matching:
        raise DailyLimitUnavailable(
            f"ProxyDailyLimitChecker {kind!r} needs a Notify entry with Service {kind!r}")
    if kind == "sqlite":
        read = SQLiteDailyRead(matching[0]["Path"])
    elif kind == "cassandra":
        from engine.store.sinks.cassandra import CassandraDailyRead, CassandraSink
        try:
            sink = CassandraSink(matching[0], config)      # settings only: no I/O
        except ValueError as exc:
            raise DailyLimitUnavailable(f"ProxyDailyLimitChecker: {exc}") from None
        read = CassandraDailyRead.own_session(sink)
    else:
        raise DailyLimitUnavailable(f"ProxyDailyLimitChecker: got {kind!r}, expected "
                                    "\"sqlite\" or \"cassandra\"")
    return DailyLimitChecker(config.proxy_daily_limit, read)
