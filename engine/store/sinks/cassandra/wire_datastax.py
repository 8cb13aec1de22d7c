"""The sink's requests over the DataStax Python driver API (``Driver:
"cassandra-driver"``): cassandra-driver, or scylla-driver, which installs the
same ``cassandra`` package.

Kept as the alternative the benchmark measures against acsylla
(loadtest/bench_cassandra.py): the same plan, the same single-partition
batches, bound by the driver's ``BatchStatement.add``. The driver is
synchronous with callbacks on its I/O thread: requests are built in the sink's
thread and chained from the callbacks, at most ``limit`` in flight; the event
loop awaits one future per ``send``.
"""
import asyncio
import datetime
import ssl
import threading
import uuid

from engine.event import COLUMNS
from engine.store.sinks.base import SinkUnavailable
from engine.system.threads import named_executor

_EPOCH_DAY = datetime.date(1970, 1, 1)


class DatastaxCodec:
    unset = None
    uuid = uuid.UUID

    @staticmethod
    def ts(ms):
        return int(ms)                  # DateType takes milliseconds as a number

    @staticmethod
    def day(text):
        return datetime.date.fromisoformat(text)

    @staticmethod
    def point(latlon):
        return (float(latlon[0]), float(latlon[1]))

    @staticmethod
    def view(vp):
        return (int(vp[0]), int(vp[1]))


class DatastaxWire:
    name = "cassandra-driver"
    codec = DatastaxCodec

    def __init__(self, settings):
        self.s = settings
        self.cluster = None
        self.sessions = []
        self.prepared = {}
        self._executor = None

    def _run_sync(self, fn, *args):
        if self._executor is None:
            self._executor = named_executor("cassandra")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---- connection ---------------------------------------------------------
    async def connect(self):
        await self._run_sync(self._connect)

    def _connect(self):
        from cassandra import DriverException
        from cassandra.cluster import NoHostAvailable
        cluster = self._new_cluster()
        try:
            self.sessions = [cluster.connect() for _ in range(self.s.connections)]
        except (NoHostAvailable, DriverException, OSError) as exc:
            cluster.shutdown()
            raise SinkUnavailable(f"cassandra {self.s.where()} unreachable: {exc}") from None
        self.cluster = cluster

    def _new_cluster(self):
        from cassandra import ConsistencyLevel, UnresolvableContactPoints
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import (DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy,
                                        TokenAwarePolicy)
        s = self.s
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=s.local_dc)),
            consistency_level=getattr(ConsistencyLevel, s.consistency_name),
            request_timeout=s.timeout)
        auth = None
        if s.entry.get("Username"):
            auth = PlainTextAuthProvider(s.entry["Username"], s.entry.get("Password", ""))
        try:
            return Cluster(contact_points=s.contact_points, port=s.port,
                           execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                           auth_provider=auth, ssl_context=self._ssl_context(),
                           connect_timeout=s.timeout, control_connection_timeout=s.timeout,
                           reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0),
                           idle_heartbeat_interval=10)
        except UnresolvableContactPoints:
            raise SinkUnavailable(f"cassandra: none of Hosts resolves: "
                                  f"{', '.join(s.contact_points)}") from None

    def _ssl_context(self):
        e = self.s.entry
        if not (e.get("CACert") or e.get("Cert") or e.get("Key") or e.get("Secure")):
            return None
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = bool(e.get("Secure"))
            ctx.verify_mode = ssl.CERT_REQUIRED if e.get("Secure") else ssl.CERT_NONE
            if e.get("Secure"):
                ctx.load_verify_locations(e["CACert"]) if e.get("CACert") else ctx.load_default_certs()
            if e.get("Cert"):
                ctx.load_cert_chain(e["Cert"], e.get("Key") or None)
        except (OSError, ssl.SSLError) as exc:
            raise SinkUnavailable(f"cassandra: cannot load CACert/Cert/Key: {exc}") from None
        return ctx

    async def close(self):
        cluster, self.cluster, self.sessions = self.cluster, None, []
        if cluster is not None:
            await self._run_sync(cluster.shutdown)
        ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=True)

    # ---- statements ---------------------------------------------------------
    async def query(self, cql):
        rows = await self._run_sync(lambda: list(self.sessions[0].execute(cql, timeout=max(
            self.s.timeout, 60.0))))
        return [r._asdict() for r in rows]

    async def prepare(self, statements):
        def prepare_all():
            for name, cql in statements.items():
                p = self.sessions[0].prepare(cql)
                p.is_idempotent = name not in _NOT_IDEMPOTENT and "IF NOT EXISTS" not in cql
                self.prepared[name] = p
        await self._run_sync(prepare_all)

    async def select_one(self, name, values):
        rows = await self._run_sync(lambda: list(self.sessions[0].execute(
            self.prepared[name], values)))
        return rows[0]._asdict() if rows else None

    # ---- requests -----------------------------------------------------------
    async def send(self, requests, limit):
        if not requests:
            return []
        if not self.sessions:
            return [SinkUnavailable(f"cassandra {self.s.where()}: not connected")] * len(requests)
        items = await self._run_sync(lambda: [self._build(r) for r in requests])
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def finished(results):
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(results))
        _Run(self.sessions, items, limit, finished).start()
        return await done

    def _build(self, request):
        from cassandra.query import UNSET_VALUE, BatchStatement, BatchType
        prepared = self.prepared
        if len(request.writes) == 1:
            w = request.writes[0]
            return prepared[w.table].bind(_full(w, UNSET_VALUE))
        batch = BatchStatement(batch_type=BatchType.COUNTER if request.counter
                               else BatchType.UNLOGGED)
        batch.is_idempotent = not request.counter
        for w in request.writes:
            batch.add(prepared[w.table], _full(w, UNSET_VALUE))
        return batch

    @staticmethod
    def unsent(exc):
        from cassandra import Unavailable
        from cassandra.cluster import NoHostAvailable
        if isinstance(exc, NoHostAvailable):
            return not exc.errors            # no host was even tried
        return isinstance(exc, (SinkUnavailable, Unavailable))


_NOT_IDEMPOTENT = frozenset({"dailies", "ips", "reqs", "hits", "referrers", "browsers",
                             "outcomes", "counters"})


def _full(write, unset):
    if not write.sparse:
        return write.values
    values = [unset] * len(COLUMNS)
    for i, v in write.values:
        values[i] = v
    return values


class _Run:
    """Execute ``items`` over ``sessions`` with at most ``limit`` in flight;
    ``done`` gets the per-item exceptions (None: success), from the driver's
    thread, once all have finished."""

    def __init__(self, sessions, items, limit, done):
        self.sessions, self.items, self.limit, self.done = sessions, items, limit, done
        self.results = [None] * len(items)
        self.next = self.finished = 0
        self.lock = threading.Lock()

    def start(self):
        for _ in range(min(self.limit, len(self.items))):
            self._send_next()

    def _send_next(self):
        with self.lock:
            i = self.next
            if i >= len(self.items):
                return
            self.next = i + 1
        try:
            fut = self.sessions[i % len(self.sessions)].execute_async(self.items[i])
        except Exception as exc:         # noqa: BLE001 - e.g. the session is shut down
            self._finish(i, exc)
            return
        fut.add_callbacks(self._ok, self._err, callback_args=(i,), errback_args=(i,))

    def _ok(self, _rows, i):
        self._finish(i, None)

    def _err(self, exc, i):
        self._finish(i, exc)

    def _finish(self, i, exc):
        self.results[i] = exc
        with self.lock:
            self.finished += 1
            last = self.finished == len(self.items)
        if last:
            self.done(self.results)
        else:
            self._send_next()
