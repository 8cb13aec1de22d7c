"""The sink's requests over acsylla (asyncio bindings to the C/C++ driver).

Why this driver: loadtest/bench_cassandra.py measures the three candidates
in one run (docs/cassandra.md, "Choosing the driver"). The C/C++ driver does
the protocol work (framing, routing, I/O) in its own thread; Python only binds
values (in C, as the prepared statement's types say) and awaits one future
per request, so a request costs a fraction of what it costs in the pure-Python
driver's request path.

Requests go out from ``lanes`` coroutines, each awaiting one request at a time:
at most ``limit`` in flight without a task per request. Token-aware routing is
the driver's default: a prepared statement knows its partition key columns,
and a batch is routed by its first statement, so a single-partition batch
goes to a replica of its partition.
"""
import asyncio
import socket

from engine.logs import log
from engine.store.sinks.base import SinkUnavailable


class AcsyllaCodec:
    """Plan values as acsylla binds them (engine/store/sinks/cassandra/plan.py)."""
    unset = None
    uuid_as_text = True                 # the driver parses the canonical text itself

    @staticmethod
    def uuid(text):
        return text                     # the driver parses the canonical text

    @staticmethod
    def ts(ms):
        # acsylla takes a timestamp number as *seconds* and truncates
        # seconds * 1000: half a millisecond more keeps float rounding from
        # ever landing on the millisecond below.
        return (ms + 0.5) / 1000

    @staticmethod
    def day(text):
        y, m, d = int(text[:4]), int(text[5:7]), int(text[8:10])
        return _days_from_civil(y, m, d) * 86_400     # epoch seconds of the UTC day

    @staticmethod
    def point(latlon):
        return {"lat": float(latlon[0]), "lon": float(latlon[1])}

    @staticmethod
    def view(vp):
        return {"w": int(vp[0]), "h": int(vp[1])}


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (no datetime objects)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


class AcsyllaWire:
    name = "acsylla"
    codec = AcsyllaCodec

    def __init__(self, settings):
        self.s = settings
        self.cluster = None
        self.session = None
        self.prepared = {}

    # ---- connection ---------------------------------------------------------
    async def connect(self):
        import acsylla
        s = self.s
        await _check_resolves(s.contact_points)
        try:
            self.cluster = acsylla.create_cluster(
                s.contact_points, port=s.port, connect_timeout=s.timeout,
                request_timeout=s.timeout, consistency=getattr(acsylla.Consistency,
                                                               s.consistency_name),
                load_balance_dc_aware=s.local_dc, token_aware_routing=True,
                core_connections_per_host=s.connections,
                exponential_reconnect_base_delay_ms=500, exponential_reconnect_max_delay_ms=10_000,
                heartbeat_interval_sec=10, log_level="error", logging_callback=_driver_log,
                **self._auth(), **self._tls())
            self.session = await self.cluster.create_session()
        except (acsylla.errors.CassErrorLibNoHostsAvailable,
                acsylla.errors.CassErrorLibUnableToConnect, acsylla.errors.CassErrorLibRequestTimedOut,
                acsylla.errors.CassErrorLibUnableToDetermineProtocol,
                acsylla.errors.CassErrorSourceSsl) as exc:
            self.session = None
            raise SinkUnavailable(f"cassandra {s.where()} unreachable: {_text(exc)}") from None

    def _auth(self):
        e = self.s.entry
        if not e.get("Username"):
            return {}
        return {"username": e["Username"], "password": e.get("Password", "")}

    def _tls(self):
        """TLS from CACert / Cert / Key (PEM files, read here: the driver takes
        their text); Secure = verify the chain and the server's address."""
        import acsylla
        e = self.s.entry
        if not (e.get("CACert") or e.get("Cert") or e.get("Key") or e.get("Secure")):
            return {}
        try:
            out = {"ssl_enabled": True, "ssl_verify_flags": (
                acsylla.SSLVerifyFlags.PEER_IDENTITY if e.get("Secure")
                else acsylla.SSLVerifyFlags.NONE)}
            for key, arg in (("CACert", "ssl_trusted_cert"), ("Cert", "ssl_cert"),
                             ("Key", "ssl_private_key")):
                if e.get(key):
                    with open(e[key]) as fh:
                        out[arg] = fh.read()
        except OSError as exc:
            raise SinkUnavailable(f"cassandra: cannot load CACert/Cert/Key: {exc}") from None
        return out

    async def close(self):
        session, self.session = self.session, None
        if session is not None:
            await session.close()
        self.cluster = None

    # ---- statements ---------------------------------------------------------
    async def query(self, cql):
        """Run a statement without parameters; its rows as dicts."""
        import acsylla
        result = await self._guard(self.session.execute(acsylla.create_statement(cql)))
        return [row.as_dict() for row in result]

    async def prepare(self, statements):
        """Prepare {name: CQL}; the names are what plan Writes carry."""
        for name, cql in statements.items():
            self.prepared[name] = await self._guard(self.session.create_prepared(cql))

    async def select_one(self, name, values):
        """The first row (a dict) of a prepared SELECT, or None."""
        st = self.prepared[name].bind()
        st.bind_list(values)
        row = (await self._guard(self.session.execute(st))).first()
        return row.as_dict() if row is not None else None

    async def _guard(self, awaitable):
        import acsylla
        try:
            return await awaitable
        except (acsylla.errors.CassErrorLibNoHostsAvailable,
                acsylla.errors.CassErrorLibRequestTimedOut) as exc:
            raise SinkUnavailable(f"cassandra {self.s.where()}: {_text(exc)}") from None

    # ---- requests -----------------------------------------------------------
    async def send(self, requests, limit):
        """Send every request; their exceptions (None: done) in order."""
        errors = [None] * len(requests)
        if not requests:
            return errors
        if self.session is None:
            exc = SinkUnavailable(f"cassandra {self.s.where()}: not connected")
            return [exc] * len(requests)
        pending = iter(enumerate(requests))
        session, build = self.session, self._build

        async def lane():
            for i, request in pending:
                try:
                    st, batch = build(request)
                    if batch:
                        await session.execute_batch(st)
                    else:
                        await session.execute(st)
                except Exception as exc:        # noqa: BLE001 - reported per request
                    errors[i] = exc
        lanes = min(limit, len(requests))
        if lanes == 1:
            await lane()
        else:
            await asyncio.gather(*[lane() for _ in range(lanes)])
        return errors

    def _build(self, request):
        import acsylla
        prepared = self.prepared
        writes = request.writes
        if len(writes) == 1:
            st = self._statement(prepared, writes[0])
            st.set_is_idempotent(not (request.counter or request.conditional))
            return st, False
        batch = acsylla.create_batch_counter() if request.counter else acsylla.create_batch_unlogged()
        batch.set_is_idempotent(not request.counter)
        for w in writes:
            batch.add_statement(self._statement(prepared, w))
        return batch, True

    @staticmethod
    def _statement(prepared, w):
        st = prepared[w.table].bind()
        if w.sparse:
            bind = st.bind
            for i, v in w.values:
                bind(i, v)
        else:
            st.bind_list(w.values)
        return st

    @staticmethod
    def unsent(exc):
        """True when the request certainly did not reach Cassandra (so a
        counter increment in it was not applied)."""
        import acsylla
        return isinstance(exc, (SinkUnavailable, acsylla.errors.CassErrorLibNoHostsAvailable,
                                acsylla.errors.CassErrorServerUnavailable,
                                acsylla.errors.CassErrorServerOverloaded,
                                acsylla.errors.CassErrorLibRequestQueueFull,
                                acsylla.errors.CassErrorLibNoStreams))


async def _check_resolves(hosts):
    """SinkUnavailable naming the Hosts when none of them resolves yet (Swarm's
    DNS answers for a task only once it runs): a store that is down, not a
    bad configuration."""
    loop = asyncio.get_running_loop()
    for host in hosts:
        try:
            await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            return
        except OSError:
            continue
    raise SinkUnavailable(f"cassandra: none of Hosts resolves: {', '.join(hosts)}")


def _text(exc):
    return f"{exc.__class__.__name__}: {exc}"[:300]


def _driver_log(message):
    text = str(getattr(message, "message", message))
    if "sharding info" in text:
        return      # the driver also speaks to ScyllaDB; Cassandra has no shards to report
    log.warning("cassandra driver", driver_level=str(getattr(message, "log_level", "")),
                message=text[:300])
