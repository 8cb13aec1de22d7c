"""Cassandra sink (DESIGN.md §3, §4): the scale-out store.

Notify entry: ``{"Service": "cassandra", "Hosts": [...], "Context": KEYSPACE, ...}``;
docs/cassandra.md lists every key.

What a batch writes (rows per table with their winning event, counter
increments per key) is engine/store/fanout.py's ``fan_out``, shared with
every sink; this module converts, stamps and sends it.

Life cycle. Nothing is connected in the supervisor (the driver's reactor
thread and sockets must not cross ``fork``): each store process builds its own
``Cluster`` and ``Connections`` sessions in ``start()``, checks
``sequences.DB_VER`` against ``SchemaVersion`` and prepares every statement.
The schema itself is created only by ``tracker schema apply``
(``apply_schema``), never by workers racing each other at start-up.

Writing a batch (``write_batch``), in two phases, each run with at most
``Concurrency`` requests in flight (driver callbacks chain the next request on
the driver's I/O thread; the event loop only awaits one future per phase):

1. row writes, all idempotent: one ``events`` insert per event (the key ends
   with ``eid``, so a replay rewrites the same row), and the fan-out tables,
   one write per key (fan_out's winner within the batch).
   First-write-wins tables (visitors, sessions, aliases, users, usernames,
   referrals) are written ``USING TIMESTAMP`` inverted from the event's
   ``created``, so the earliest event wins every cell whatever order batches
   arrive in, with no Paxos round; latest-wins tables (nodes, locations,
   affiliates) use a timestamp equal to ``created`` (``FIRST_WRITE`` explains
   the alternative, ``"paxos"``, kept for the benchmark).
2. counters, coalesced per batch (``total = total + n`` once per key), sent
   only after every row write of the batch succeeded.

Counters and replays. Cassandra counters are not idempotent, so a batch is
never written twice past its row phase. A row write that fails fails the
batch, which is retried whole (rows are idempotent; no counter was sent yet).
Once the rows are in, the batch counts as written: the counter updates that
fail go to the sink's durable residue (engine/store/sinks/counter_residue.py), a
file in ``SpoolDirectory`` retried by a background task until Cassandra takes
them, and adopted by another store process if this one dies or stops first. So an
increment confirmed once is never re-sent — not by a retry, not by a spool
replay after a crash, not after a restart during an outage. What remains:

- an update whose outcome is unknown (a timeout: the node may have applied it)
  is retried, so it may count twice; the driver does not retry counters
  itself for that reason, and Cassandra offers nothing better;
- a crash in the milliseconds between Cassandra confirming a batch and the
  spool saving that sink's acknowledgement replays the batch (its counters
  count twice, its rows are rewritten identically).

``events`` and every row table stay exact in all of these cases.
"""
import asyncio
import datetime
import re
import ssl
import threading
import uuid
import zlib

from engine.store import fanout
from engine.event import COLUMNS
from engine.store.fanout import EARLIEST, LATEST, fan_out
from engine.logs import log
from engine.store.sinks.base import Sink, SinkUnavailable
from engine.store.sinks.counter_residue import CounterResidue
from engine.system.threads import named_executor
from schema import schema_text

DEFAULT_PORT = 9042
DEFAULT_KEYSPACE = "tracker"
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_CONCURRENCY = 128
DEFAULT_ROW_BATCH = 8      # row writes per UNLOGGED batch request (RowBatch)
DEFAULT_REPLICATION = {"class": "NetworkTopologyStrategy", "replication_factor": 1}

RESIDUE_RETRY_FIRST, RESIDUE_RETRY_MAX = 0.5, 10.0   # seconds between residue resends
RESIDUE_ADOPT_EVERY = 10.0                           # seconds between orphan scans
FIRST_WRITE = ("timestamp", "paxos")
"""How first-write-wins tables keep the earliest event.
``timestamp`` (default): plain inserts whose write timestamp decreases with
the event's ``created`` (see ``earliest_ts``): Cassandra's own last-write-wins
rule then keeps the earliest event, order-independently, in one ordinary write.
``paxos``: ``INSERT ... IF NOT EXISTS`` (a lightweight transaction: four
round trips between replicas per write); it keeps the first event to
*arrive*, which is not the earliest one when batches are retried or replayed
out of order. loadtest/bench_cassandra.py measures both."""

# Size per batch request: Cassandra logs a warning for every batch over its
# batch_size_warn_threshold (5 KiB by default), counted with per-cell overhead
# (timestamps, flags, lengths); _batch_bytes estimates it from the bound values.
BATCH_VALUE_BYTES = 4096
CELL_OVERHEAD = 40


def _batch_bytes(values):
    """Estimated size of a bound row write in a batch: its values plus a
    fixed overhead per cell written (a null is a cell too; unset is not)."""
    n = 0
    for v in values:
        if v.__class__ is bytes:
            n += len(v) + CELL_OVERHEAD
        elif v is None:
            n += CELL_OVERHEAD
    return n


def _count(entry, key, default, low, high):
    """An integer key of the Notify entry, checked against [low, high]
    (``high`` None: no upper bound). Absent or 0 (the Go collector's zero
    value) = ``default``."""
    value = entry.get(key)
    if value is None or (value == 0 and value.__class__ is int):
        return default
    if value.__class__ is not int or value < low or (high is not None and value > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"cassandra {key}: got {value!r}, expected an integer, {bound}")
    return value


_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_EPOCH_DAY = datetime.date(1970, 1, 1)
_INVERT_BASE = 10 ** 15


class SchemaMismatch(SinkUnavailable):
    """The keyspace is missing or its DB_VER is not this config's SchemaVersion."""


_UUID_EPOCH_OFFSET = 0x01B21DD213814000   # 100 ns ticks from 1582-10-15 to 1970-01-01


def _sub_ms(created_ms, eid):
    """Microseconds into ``created_ms`` at which the event was stamped (0..999).

    Version-1 eids carry a 100 ns clock (strictly increasing per worker, the
    wall clock across workers), so two events of the same millisecond order
    by when they were taken, not by random bits of the eid. Eids that are not
    version 1, or whose time lies outside the millisecond, clamp to its ends."""
    if eid.version != 1:
        return 0
    us = (eid.time - _UUID_EPOCH_OFFSET) // 10 - int(created_ms) * 1000
    return 0 if us < 0 else 999 if us > 999 else us


def earliest_ts(created_ms, eid):
    """Write timestamp for earliest-wins tables: larger for earlier events.

    ``10^15 - 100 * created_ms - (10 µs steps into the millisecond)``: events
    of the same millisecond still order by their eid's clock. The values lie
    around 1996 (in microseconds) and stay positive until year 2286, so a plain
    DELETE beats them."""
    return _INVERT_BASE - 100 * int(created_ms) - _sub_ms(created_ms, eid) // 10


def latest_ts(created_ms, eid):
    """Write timestamp for latest-wins tables: the event's own time (µs)."""
    return int(created_ms) * 1000 + _sub_ms(created_ms, eid)


def cql_date(created_ms):
    """The UTC day of an event's ``created`` (ms) as the driver's ``date`` value."""
    return _EPOCH_DAY + datetime.timedelta(days=int(created_ms) // 86_400_000)


def replication_cql(value):
    """``Replication`` (a dict or CQL map text) -> CQL map literal."""
    if value is None:
        value = DEFAULT_REPLICATION
    if isinstance(value, str):
        text = value.strip()
        if not (text.startswith("{") and text.endswith("}") and "class" in text):
            raise ValueError(f"cassandra Replication: got {value!r}, expected a CQL map such "
                             "as {'class': 'NetworkTopologyStrategy', 'dc1': 3}")
        return text
    if not isinstance(value, dict) or "class" not in value:
        raise ValueError(f"cassandra Replication: got {value!r}, expected an object with "
                         '"class", e.g. {"class": "NetworkTopologyStrategy", "dc1": 3}')
    parts = []
    for k, v in value.items():
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(k)) or not re.fullmatch(r"[A-Za-z0-9_.\-:]+", str(v)):
            raise ValueError(f"cassandra Replication: bad entry {k!r}: {v!r}")
        parts.append(f"'{k}': '{v}'")
    return "{" + ", ".join(parts) + "}"


def schema_statements(keyspace, replication):
    """The statements of schema/cassandra.cql for ``keyspace``."""
    text = schema_text("cassandra.cql")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    body = "\n".join(lines)
    out = []
    for stmt in body.split(";"):
        stmt = stmt.strip()
        if stmt:
            out.append(stmt.replace("{keyspace}", keyspace).replace("{replication}", replication))
    return out


def _object_of(stmt):
    """("keyspace"|"type"|"table", name) created by a CREATE statement."""
    m = re.match(r"CREATE\s+(KEYSPACE|TYPE|TABLE)\s+IF\s+NOT\s+EXISTS\s+([\w.]+)", stmt, re.I)
    kind, name = m.group(1).lower(), m.group(2)
    return kind, name.split(".")[-1]


# ---------------------------------------------------------------- statements

class _RowTable:
    def __init__(self, name, key, cols, keep):
        self.name, self.key, self.keep = name, key, keep
        self.cols = key + ("created", "eid") + tuple(c for c in cols if c not in key)
        self.nkey = len(key)

    def insert_cql(self, keyspace, paxos=False):
        cols = ", ".join(self.cols)
        marks = ", ".join("?" * len(self.cols))
        if paxos:
            return f"INSERT INTO {keyspace}.{self.name} ({cols}) VALUES ({marks}) IF NOT EXISTS"
        return f"INSERT INTO {keyspace}.{self.name} ({cols}) VALUES ({marks}) USING TIMESTAMP ?"


ROW_TABLES = tuple(_RowTable(*spec) for spec in fanout.ROW_TABLES)
(VISITORS, SESSIONS, NODES, LOCATIONS, ALIASES, USERS, USERNAMES, REFERRALS,
 AFFILIATES) = ROW_TABLES
COUNTER_TABLES = fanout.COUNTER_TABLES


def _counter_cql(keyspace, table, key):
    where = " AND ".join(f"{k} = ?" for k in key)
    return f"UPDATE {keyspace}.{table} SET total = total + ? WHERE {where}"


_UUID_CACHE_MAX = 100_000


class _Values:
    """Event dict -> driver values (uuid.UUID, ms timestamps, UDT tuples)."""

    def __init__(self):
        self.days = {}

    def __call__(self, ev):
        v = dict(ev)
        v["eid"] = uuid.UUID(ev["eid"])
        v["vid"] = uuid.UUID(ev["vid"])
        v["sid"] = uuid.UUID(ev["sid"])
        v["first"] = bool(ev.get("first"))
        latlon = ev.get("latlon")
        v["latlon"] = (float(latlon[0]), float(latlon[1])) if latlon else None
        vp = ev.get("vp")
        v["vp"] = (int(vp[0]), int(vp[1])) if vp else None
        v["params"] = ev.get("params") or None
        return v

    def day(self, text):
        """A fan-out day ("YYYY-MM-DD") as the driver's ``date``."""
        day = self.days.get(text)
        if day is None:
            if len(self.days) > 64:
                self.days.clear()
            day = self.days[text] = datetime.date.fromisoformat(text)
        return day


# ---------------------------------------------------------------- concurrency

class _Run:
    """Execute ``items`` [(prepared statement, params), ...] over ``sessions``
    with at most ``limit`` in flight; ``done`` is called once, with a list of
    exceptions (None for success) in item order, from the driver's thread."""

    def __init__(self, sessions, items, limit, done):
        self.sessions = sessions
        self.items = items
        self.results = [None] * len(items)
        self.next = 0
        self.finished = 0
        self.limit = limit
        self.done = done
        self.lock = threading.Lock()

    def start(self):
        if not self.items:
            self.done(self.results)
            return
        for _ in range(min(self.limit, len(self.items))):
            self._send_next()

    def _send_next(self):
        with self.lock:
            i = self.next
            if i >= len(self.items):
                return
            self.next = i + 1
        stmt, params = self.items[i]
        session = self.sessions[i % len(self.sessions)]
        try:
            fut = session.execute_async(stmt, params)
        except Exception as exc:  # e.g. the session is shut down
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


async def run_concurrently(sessions, items, limit):
    """Run ``items``; return the per-item exceptions (None = success)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def done(results):
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(results))

    _Run(sessions, items, limit, done).start()
    return await fut


# ---------------------------------------------------------------- the sink

class CassandraSink(Sink):
    service = "cassandra"
    entry_keys = frozenset({
        "Service", "Critical", "Context", "Hosts", "Timeout", "Connections", "Concurrency",
        "RowBatch", "Consistency", "LocalDC", "FirstWrite", "Replication",
        "CACert", "Cert", "Key", "Secure", "Username", "Password"})
    multi_writer = True

    def __init__(self, entry, config):
        super().__init__(entry, config)
        self.keyspace = entry.get("Context") or DEFAULT_KEYSPACE
        if not _KEYSPACE_RE.match(self.keyspace):
            raise ValueError(f"cassandra Context: got {self.keyspace!r}, expected a keyspace "
                             "name (letters, digits, _; at most 48)")
        self.contact_points, self.port = self._hosts(entry.get("Hosts") or ["127.0.0.1"])
        self.timeout = _count(entry, "Timeout", DEFAULT_TIMEOUT_MS, 1, None) / 1000.0
        self.connections = _count(entry, "Connections", 1, 1, 64)
        self.concurrency = _count(entry, "Concurrency", DEFAULT_CONCURRENCY, 1, 100_000)
        self.row_batch = _count(entry, "RowBatch", DEFAULT_ROW_BATCH, 1, 64)
        self.consistency_name = str(entry.get("Consistency") or "LOCAL_ONE").upper()
        self.local_dc = entry.get("LocalDC") or None
        self.first_write = entry.get("FirstWrite") or "timestamp"
        if self.first_write not in FIRST_WRITE:
            raise ValueError(f"cassandra FirstWrite: got {self.first_write!r}, "
                             f"expected one of {', '.join(FIRST_WRITE)}")
        self.replication = replication_cql(entry.get("Replication"))
        self.schema_version = int(config.schema_version)
        self.cluster = None
        self.sessions = []
        self.stmts = None
        self._values = _Values()
        self.residue = None        # counter updates Cassandra has not confirmed yet
        self._residue_wake = None
        self._residue_task = None
        self._executor = None
        self.statements_sent = 0
        self.requests_sent = 0
        self._conditional = set()

    @staticmethod
    def _hosts(hosts):
        points, port = [], DEFAULT_PORT
        for h in hosts:
            h = str(h).strip()
            host, sep, p = h.rpartition(":")
            if sep and p.isdigit() and "]" not in p:
                port = int(p)
                h = host.strip("[]")
            points.append(h)
        return points, port

    # -- connection

    def ssl_context(self):
        """TLS from CACert / Cert / Key; Secure = verify the server (chain and
        host name). None when no TLS key is set."""
        e = self.entry
        if not (e.get("CACert") or e.get("Cert") or e.get("Key") or e.get("Secure")):
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if e.get("Secure"):
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            if e.get("CACert"):
                ctx.load_verify_locations(e["CACert"])
            else:
                ctx.load_default_certs()
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if e.get("Cert"):
            ctx.load_cert_chain(e["Cert"], e.get("Key") or None)
        return ctx

    def _new_cluster(self):
        from cassandra import ConsistencyLevel, UnresolvableContactPoints
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import (DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy,
                                        TokenAwarePolicy)
        try:
            consistency = getattr(ConsistencyLevel, self.consistency_name)
        except AttributeError:
            raise ValueError(f"cassandra Consistency: got {self.consistency_name!r}, expected "
                             "a consistency level such as LOCAL_ONE, LOCAL_QUORUM") from None
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self.local_dc)),
            consistency_level=consistency, request_timeout=self.timeout)
        auth = None
        if self.entry.get("Username"):
            auth = PlainTextAuthProvider(self.entry["Username"], self.entry.get("Password", ""))
        try:
            ctx = self.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise SinkUnavailable(f"cassandra: cannot load CACert/Cert/Key: {exc}") from None
        try:
            return Cluster(contact_points=self.contact_points, port=self.port,
                           execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                           auth_provider=auth, ssl_context=ctx,
                           connect_timeout=self.timeout, control_connection_timeout=self.timeout,
                           reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0),
                           idle_heartbeat_interval=10)
        except UnresolvableContactPoints:
            # No Hosts name resolves yet (Swarm's DNS answers for a task only
            # once it runs): unavailable like an unreachable node, not a bad config.
            raise SinkUnavailable(f"cassandra: none of Hosts resolves: "
                                  f"{', '.join(self.contact_points)}") from None

    def _where(self):
        return f"{','.join(self.contact_points)}:{self.port}/{self.keyspace}"

    def _get_executor(self):
        if self._executor is None:
            self._executor = named_executor("cassandra")
        return self._executor

    async def start(self):
        loop = asyncio.get_running_loop()
        if self.residue is None:     # before connecting: orphans are adopted even if down
            await loop.run_in_executor(self._get_executor(), self._open_residue)
            self._residue_wake = asyncio.Event()
            self._residue_task = loop.create_task(self._retry_residue())
        await loop.run_in_executor(self._get_executor(), self.start_sync)
        if self.residue.items:
            self._residue_wake.set()

    def _open_residue(self):
        hosts = ",".join(sorted(self.contact_points)) + f":{self.port}"
        prefix = f"cassandra-{self.keyspace}-{zlib.crc32(hosts.encode()):08x}"
        residue = CounterResidue(self.config.spool_directory, prefix)
        residue.open()
        adopted = residue.adopt_orphans()
        if adopted:
            log.warning("adopted counter updates a previous worker could not write",
                        sink="cassandra", keys=adopted)
        self.residue = residue

    def start_sync(self):
        """Connect, check DB_VER, prepare statements (blocking)."""
        from cassandra import DriverException
        from cassandra.cluster import NoHostAvailable
        if self.cluster is not None:
            return
        cluster = self._new_cluster()
        try:
            sessions = [cluster.connect() for _ in range(self.connections)]
            self._check_version(sessions[0])
            self.stmts = self._prepare(sessions[0])
            self._counter_table = {id(self.stmts[t]): t for t in COUNTER_TABLES}
            self._conditional = {self.stmts[t.name] for t in ROW_TABLES
                                 if self.first_write == "paxos" and t.keep == EARLIEST}
        except SinkUnavailable:
            cluster.shutdown()
            raise
        except (NoHostAvailable, DriverException, OSError) as exc:
            cluster.shutdown()
            raise SinkUnavailable(f"cassandra {self._where()} unreachable: {exc}") from None
        except BaseException:
            cluster.shutdown()
            raise
        self.cluster, self.sessions = cluster, sessions

    def _check_version(self, session):
        from cassandra import InvalidRequest
        ks = session.cluster.metadata.keyspaces.get(self.keyspace)
        if ks is None or "sequences" not in ks.tables:
            raise SchemaMismatch(
                f"cassandra {self._where()}: keyspace {self.keyspace!r} has no sequences "
                f"table; create the schema first: tracker schema apply --config FILE")
        try:
            row = session.execute(
                f"SELECT seq FROM {self.keyspace}.sequences WHERE name = 'DB_VER'").one()
        except InvalidRequest as exc:
            raise SchemaMismatch(f"cassandra {self._where()}: cannot read sequences: {exc}") from None
        if row is None:
            raise SchemaMismatch(
                f"cassandra {self._where()}: sequences has no DB_VER row; "
                f"run tracker schema apply --config FILE")
        if row.seq != self.schema_version:
            raise SchemaMismatch(
                f"cassandra {self._where()}: schema version is {row.seq} "
                f"(sequences.DB_VER) but this configuration expects SchemaVersion "
                f"{self.schema_version}; migrate the keyspace or fix SchemaVersion")

    def _prepare(self, session):
        ks = self.keyspace
        paxos = self.first_write == "paxos"
        stmts = {"events": session.prepare(
            f"INSERT INTO {ks}.events ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})")}
        stmts["events"].is_idempotent = True
        for t in ROW_TABLES:
            s = session.prepare(t.insert_cql(ks, paxos and t.keep == EARLIEST))
            s.is_idempotent = True
            stmts[t.name] = s
        for table, key in COUNTER_TABLES.items():
            s = session.prepare(_counter_cql(ks, table, key))
            s.is_idempotent = False
            stmts[table] = s
        stmts["logs"] = session.prepare(
            f"INSERT INTO {ks}.logs (ldate, created, ltime, id, name, host, hostname, "
            f"owner, ip, level, msg, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        stmts["updates"] = session.prepare(
            f"INSERT INTO {ks}.updates (id, updated, msg, params) VALUES (?, ?, ?, ?) "
            f"USING TIMESTAMP ?")
        return stmts

    async def close(self):
        if self._residue_task is not None:
            self._residue_task.cancel()
            self._residue_task = None
        if self.residue is not None and self.residue.items and self.sessions:
            try:    # one last resend: a clean stop should leave nothing behind
                await asyncio.wait_for(self._send_residue(), self.timeout)
            except (asyncio.TimeoutError, OSError) as exc:
                log.warning("last counter residue resend failed", error=repr(exc)[:200])
        if self.residue is not None:
            if self.residue.items:
                log.warning("counter updates not yet written stay on disk for the next worker",
                            sink="cassandra", keys=len(self.residue.items))
            self.residue.close()
            self.residue = None
        ex = self._executor
        if self.cluster is not None:
            cluster, self.cluster, self.sessions = self.cluster, None, []
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._get_executor(), cluster.shutdown)
        if ex is not None:
            self._executor = None
            ex.shutdown(wait=True)

    def close_sync(self):
        if self.cluster is not None:
            cluster, self.cluster, self.sessions = self.cluster, None, []
            cluster.shutdown()

    # -- schema

    async def apply_schema(self):
        """`tracker schema apply`: create what is missing, say what existed."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._get_executor(), self.apply_schema_sync)
        finally:
            ex, self._executor = self._executor, None
            ex.shutdown(wait=True)

    def apply_schema_sync(self):
        from cassandra.cluster import NoHostAvailable
        cluster = self._new_cluster()
        try:
            try:
                session = cluster.connect()
            except NoHostAvailable as exc:
                raise SinkUnavailable(f"cassandra {self._where()} unreachable: {exc}") from None
            ks = self.keyspace
            existing = self._existing(session)
            created, kept = [], []
            for stmt in schema_statements(ks, self.replication):
                kind, name = _object_of(stmt)
                (kept if (kind, name) in existing else created).append(f"{kind} {name}")
                session.execute(stmt, timeout=max(self.timeout, 60.0))
            cluster.control_connection.wait_for_schema_agreement()
            row = session.execute(f"SELECT seq FROM {ks}.sequences WHERE name = 'DB_VER'").one()
            if row is None:
                session.execute(f"INSERT INTO {ks}.sequences (name, seq) VALUES ('DB_VER', %s) "
                                "IF NOT EXISTS", (self.schema_version,))
                row = session.execute(
                    f"SELECT seq FROM {ks}.sequences WHERE name = 'DB_VER'").one()
                ver = f"sequences DB_VER = {row.seq} (written)"
            else:
                ver = f"sequences DB_VER = {row.seq} (already there)"
            if row.seq != self.schema_version:
                raise SchemaMismatch(
                    f"cassandra {self._where()}: schema version is {row.seq} (sequences.DB_VER) "
                    f"but this configuration expects SchemaVersion {self.schema_version}")
            where = self._where()
            return [f"{where}: created {len(created)}" +
                    (f" ({', '.join(created)})" if created else ""),
                    f"{where}: {len(kept)} already existed" +
                    (f" ({', '.join(kept)})" if kept else ""),
                    f"{where}: {ver}"]
        finally:
            cluster.shutdown()

    def _existing(self, session):
        ks = self.keyspace
        found = set()
        if session.execute("SELECT keyspace_name FROM system_schema.keyspaces "
                           "WHERE keyspace_name = %s", (ks,)).one():
            found.add(("keyspace", ks))
        for r in session.execute("SELECT table_name FROM system_schema.tables "
                                 "WHERE keyspace_name = %s", (ks,)):
            found.add(("table", r.table_name))
        for r in session.execute("SELECT type_name FROM system_schema.types "
                                 "WHERE keyspace_name = %s", (ks,)):
            found.add(("type", r.type_name))
        return found

    # -- writing

    def plan(self, events):
        """The batch as (row writes, counter writes): lists of (statement,
        params). What is written is ``fan_out``'s (engine/store/fanout.py);
        here values are converted and stamped."""
        from cassandra.query import UNSET_VALUE
        batch = fan_out(events)
        st = self.stmts
        paxos = self.first_write == "paxos"
        events_stmt = st["events"]
        convert = self._values
        row_items, values = [], {}
        for ev in batch:
            v = convert(ev)
            row_items.append((events_stmt, [v[c] if c in v and v[c] is not None else UNSET_VALUE
                                            for c in COLUMNS]))
            v["ip"] = ev.get("ip") or ""
            values[id(ev)] = v
        rows = batch.rows
        for t in ROW_TABLES:
            stmt = st[t.name]
            stamp = latest_ts if t.keep == LATEST else earliest_ts
            lwt = paxos and t.keep == EARLIEST
            for ev in rows[t.name].values():
                v = values[id(ev)]
                params = [v.get(c) for c in t.cols]
                if not lwt:
                    params.append(stamp(ev["created"], v["eid"]))
                row_items.append((stmt, params))
        counter_items = []
        key_of = self._counter_key
        for table, c in batch.counters.items():
            stmt = st[table]
            for key, n in c.items():
                counter_items.append((stmt, [n, *key_of(table, key)]))
        return row_items, counter_items

    def _counter_key(self, table, key):
        """A fan-out counter key in the driver's types (uuid, date)."""
        if table == "dailies":
            return key[0], self._values.day(key[1])
        if table == "reqs":
            return (uuid.UUID(key[0]),)
        if table == "outcomes":
            return key[0], key[1], key[2], self._values.day(key[3])
        return key

    async def write_batch(self, events):
        if not events:
            return 0
        if not self.sessions:
            raise SinkUnavailable(f"cassandra {self._where()}: not connected (start() first)")
        # Converting and binding ~7 statements per event is CPU work: done in
        # the sink's thread, so the event loop keeps answering meanwhile.
        loop = asyncio.get_running_loop()
        row_items, requests, counter_items = await loop.run_in_executor(
            self._get_executor(), self._requests, events)
        errors = await run_concurrently(self.sessions, requests, self.concurrency)
        self.statements_sent += len(row_items)
        self.requests_sent += len(requests)
        self._raise_first(errors, len(requests), "row")
        await self._write_counters(counter_items)
        return len(row_items)

    def _requests(self, events):
        """(row writes, the requests carrying them, counter writes) of a batch."""
        row_items, counter_items = self.plan(events)
        return row_items, self.batched(row_items), counter_items

    def batched(self, items):
        """Row writes grouped into UNLOGGED batches of up to ``RowBatch``
        statements and about ``BATCH_VALUE_BYTES``: one request (one round
        of driver and coordinator overhead) carries several writes. Safe
        because row writes are idempotent and a failed request fails the whole
        flush, which is retried. Conditional (paxos) inserts and counters stay
        one per request: Cassandra refuses conditions across partitions, and a
        counter batch that half-fails could not be retried exactly."""
        if self.row_batch == 1:
            return items
        from cassandra.query import BatchStatement, BatchType
        out, batch, size = [], None, 0
        for stmt, params in items:
            if stmt in self._conditional:
                out.append((stmt, params))
                continue
            bound = stmt.bind(params)
            n = _batch_bytes(bound.values)
            if batch is None or len(batch) >= self.row_batch or size + n > BATCH_VALUE_BYTES:
                batch, size = BatchStatement(batch_type=BatchType.UNLOGGED), 0
                batch.is_idempotent = True
                out.append((batch, None))
            batch.add(bound)
            size += n
        return out

    async def _write_counters(self, items):
        """Send counter updates once; what fails goes to the residue (durable)
        instead of failing the batch, whose confirmed increments must not be
        sent again."""
        errors = await run_concurrently(self.sessions, items, self.concurrency)
        self.statements_sent += len(items)
        self.requests_sent += len(items)
        failed = {}
        for (stmt, params), exc in zip(items, errors):
            if exc is not None:
                k = (self._counter_table[id(stmt)], tuple(params[1:]))
                failed[k] = failed.get(k, 0) + params[0]
        if not failed:
            return
        first = next(e for e in errors if e is not None)
        log.warning("counter updates failed; kept in the residue and retried",
                    sink="cassandra", failed=len(failed), of=len(items), error=repr(first)[:300])
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._get_executor(), self.residue.add, failed)
        except OSError as exc:       # still kept in memory (add merges before saving)
            log.error("could not save the counter residue; it lives in memory only",
                      sink="cassandra", error=str(exc))
        self._residue_wake.set()

    async def _retry_residue(self):
        """Resend the residue with backoff until Cassandra takes it; adopt
        orphaned residues now and then (a worker that died meanwhile)."""
        loop = asyncio.get_running_loop()
        backoff, since_adopt = RESIDUE_RETRY_FIRST, 0.0
        while True:
            try:
                await asyncio.wait_for(self._residue_wake.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            self._residue_wake.clear()
            since_adopt += backoff
            if since_adopt >= RESIDUE_ADOPT_EVERY:
                since_adopt = 0.0
                await loop.run_in_executor(self._get_executor(), self.residue.adopt_orphans)
            if not self.residue.items or not self.sessions:
                backoff = RESIDUE_RETRY_FIRST
                continue
            if await self._send_residue():
                backoff = RESIDUE_RETRY_FIRST
            else:
                backoff = min(backoff * 2, RESIDUE_RETRY_MAX)

    async def _send_residue(self):
        """One resend of the whole residue; True when Cassandra took all of it."""
        sent = dict(self.residue.items)
        items = [(self.stmts[t], [n, *key]) for (t, key), n in sent.items()]
        errors = await run_concurrently(self.sessions, items, self.concurrency)
        taken = {k: n for (k, n), e in zip(sent.items(), errors) if e is None}
        if taken:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._get_executor(), self.residue.confirm, taken)
        if len(taken) == len(sent):
            log.info("counter residue written", sink="cassandra", keys=len(taken))
            return True
        return False

    def _raise_first(self, errors, total, what):
        failed = [e for e in errors if e is not None]
        if failed:
            raise SinkUnavailable(f"cassandra {self._where()}: {len(failed)} of {total} {what} "
                                  f"writes failed, first: {failed[0]!r}"[:600])

    # -- NATS messages (interface: engine/sinks/base.py, records: engine/nats/messages.py)

    async def write_messages(self, logs, counts, updates):
        """Store a group of consumed bus messages: ``logs`` rows (keyed by
        their id: a redelivery rewrites the same row), ``counts`` as
        ``counters`` increments, ``updates`` rows written USING TIMESTAMP of
        their ``updated`` (the latest wins whatever the arrival order). Row
        writes go first; counters only after they all succeeded, and failed
        increments go to the residue, as in ``write_batch``."""
        if not (logs or counts or updates):
            return 0
        if not self.sessions:
            raise SinkUnavailable(f"cassandra {self._where()}: not connected (start() first)")
        st = self.stmts
        rows = []
        for r in logs:
            rows.append((st["logs"], [datetime.date.fromisoformat(r["ldate"]), int(r["created"]),
                                      int(r["ltime"]), uuid.UUID(r["id"]), r.get("name"),
                                      r.get("host"), r.get("hostname"), r.get("owner"),
                                      r.get("ip"), r.get("level"), r.get("msg"),
                                      r.get("params") or None]))
        for r in updates:
            updated = int(r["updated"])
            rows.append((st["updates"], [r["id"], updated, r.get("msg"),
                                         r.get("params") or None, updated * 1000]))
        counter_items = [(self.stmts["counters"], [int(n), cid]) for cid, n in counts.items()]
        self._raise_first(await run_concurrently(self.sessions, rows, self.concurrency),
                          len(rows), "message row")
        await self._write_counters(counter_items)
        return len(logs) + sum(counts.values()) + len(updates)



# ---------------------------------------------------------------- daily limits

class CassandraDailyRead:
    """``ProxyDailyLimitChecker: "cassandra"``: the read of
    ``engine.limits.daily.DailyLimitChecker`` (which owns the cache, the counting
    and when to read): the ``dailies`` total of one IP on one day, one query.

    It needs only a connected session and the keyspace, not the sink:
    ``session`` is a callable returning a driver ``Session`` (None while
    there is none), so a process that does not write can give it its own.
    """

    def __init__(self, keyspace, session):
        self.keyspace = keyspace
        self.session = session
        self.queries = 0
        self._stmt = None

    @classmethod
    def of_sink(cls, sink):
        """Read through a sink's first session (the sink writes in this process)."""
        return cls(sink.keyspace, lambda: sink.sessions[0] if sink.sessions else None)

    @classmethod
    def own_session(cls, sink):
        """Read on a session of its own, for a process that writes nothing (an
        HTTP worker): ``sink`` only lends its settings (hosts, TLS, timeouts);
        the session connects in a background thread on first use, and until
        it has, reads fail (the checker then lets requests through)."""
        state = {"session": None, "connecting": False}

        def connect():
            try:
                state["session"] = sink._new_cluster().connect()
            except Exception as exc:
                log.warning("daily limit: cannot connect to cassandra", error=repr(exc)[:200])
            finally:
                state["connecting"] = False

        def session():
            if state["session"] is None and not state["connecting"]:
                state["connecting"] = True
                threading.Thread(target=connect, name="dailies", daemon=True).start()
            return state["session"]
        return cls(sink.keyspace, session)

    async def __call__(self, ip, day):
        session = self.session()
        if session is None:
            raise SinkUnavailable("cassandra is not connected")
        loop = asyncio.get_running_loop()
        if self._stmt is None:
            self._stmt = await loop.run_in_executor(
                None, session.prepare,
                f"SELECT total FROM {self.keyspace}.dailies WHERE ip = ? AND day = ?")
        fut = loop.create_future()

        def ok(rows):
            row = rows[0] if rows else None
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(row.total if row else 0))

        def err(exc):
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_exception(exc))

        self.queries += 1
        session.execute_async(self._stmt, (ip, datetime.date.fromisoformat(day))).add_callbacks(
            ok, err)
        return await fut
