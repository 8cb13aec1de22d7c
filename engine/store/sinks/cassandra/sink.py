"""Cassandra sink (DESIGN.md §3, §4): the scale-out store.

Notify entry: ``{"Service": "cassandra", "Hosts": [...], "Context": KEYSPACE, ...}``;
docs/cassandra.md lists every key.

What a batch writes (rows per table with their winning event, counter
increments per key) is engine/store/fanout.py's ``fan_out``, shared with every
sink; plan.py turns it into single-partition requests; a wire sends them:
wire_native.py, the collector's own CQL connections, by default; wire_acsylla.py
(``Driver: "acsylla"``, the default with TLS or authentication) or
wire_datastax.py (``"cassandra-driver"``).

Life cycle. Nothing is connected in the supervisor (a driver's threads and
sockets must not cross ``fork``): each store process connects in ``start()``,
checks ``sequences.DB_VER`` against ``SchemaVersion`` and prepares every
statement. The schema itself is created only by ``tracker schema apply``
(``apply_schema``), never by store processes racing each other at start-up.

Writing a batch (``write_batch``), in two phases, each with at most
``Concurrency`` requests in flight:

1. rows, all idempotent: one ``events`` insert per event (the key ends with
   ``eid``, so a replay rewrites the same row), and the fan-out rows, one write
   per key (fan_out's winner within the batch). First-write-wins tables
   (visitors, sessions, aliases, users, usernames, referrals) are written
   ``USING TIMESTAMP`` inverted from the event's ``created``, so the earliest
   event wins every cell whatever order batches arrive in, with no Paxos
   round; latest-wins tables (nodes, locations, affiliates) use a timestamp
   equal to ``created`` (stamps.py; ``FirstWrite: "paxos"`` is the
   alternative, kept for the benchmark).
2. counters, coalesced per key, sent only after every row request of the
   batch succeeded, as COUNTER batches of one partition each.

Counters and replays. Cassandra counters are not idempotent, so a batch is
never written twice past its row phase. A row request that fails fails the
batch, which is retried whole (rows are idempotent; no counter was sent yet).
Once the rows are in, the batch counts as written: the increments of a counter
request that fails go to the sink's durable residue
(engine/store/sinks/counter_residue.py), a file in ``SpoolDirectory`` retried
by a background task until Cassandra takes them, and adopted by another store
process if this one dies or stops first. A counter request holds one
partition, which Cassandra applies as one mutation: all its increments or
none. So an increment confirmed once is never re-sent — not by a retry, not by
a spool replay after a crash, not after a restart during an outage. What
remains:

- a request whose outcome is unknown (a timeout, a connection lost after it
  was written: the replica may have applied it) is resent from the residue,
  so its increments may count twice; no driver retries counters by itself for
  that reason, and Cassandra offers nothing better;
- a store process killed between Cassandra confirming a batch's counters and
  the spool saving that sink's position replays the batch: its counters count
  twice, its rows are rewritten identically.

``events`` and every row table stay exact in all of these cases.
"""
import asyncio
import time
import zlib

from engine.logs import log
from engine.store import retention
from engine.store.sinks.base import Sink, SinkUnavailable
from engine.store.sinks.cassandra import cql
from engine.store.sinks.cassandra.plan import MAX_STATEMENTS, Planner, Write, partition_of
from engine.store.sinks.counter_residue import CounterResidue

DEFAULT_PORT = 9042
DEFAULT_KEYSPACE = "tracker"
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_CONCURRENCY = 128
# the native wire spends less per request with more in flight (bigger reads and
# writes per loop turn): write_batch 57 -> 47 us/event at 512, docs/cassandra.md
NATIVE_CONCURRENCY = 512
DRIVERS = ("acsylla", "native", "cassandra-driver")
TLS_OR_AUTH = ("CACert", "Cert", "Key", "Secure", "Username")
FIRST_WRITE = ("timestamp", "paxos")
SCHEMA_AGREEMENT_WAIT = 30.0     # seconds a DDL statement waits for the schema to spread
RESIDUE_RETRY_FIRST, RESIDUE_RETRY_MAX = 0.5, 10.0   # seconds between residue resends
RESIDUE_ADOPT_EVERY = 10.0                           # seconds between orphan scans
CONSISTENCY = ("ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM",
               "LOCAL_ONE")


class SchemaMismatch(SinkUnavailable):
    """The keyspace is missing or its DB_VER is not this config's SchemaVersion."""


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


def _choice(entry, key, default, allowed):
    value = entry.get(key) or default
    if value not in allowed:
        raise ValueError(f"cassandra {key}: got {value!r}, expected one of {', '.join(allowed)}")
    return value


async def _schema_statement(wire, stmt, wait=SCHEMA_AGREEMENT_WAIT):
    """One idempotent DDL statement. On a cluster that has just formed, the node
    coordinating it may not have heard of the keyspace the previous statement
    created yet ("... doesn't exist", seen once in CI on three fresh nodes), nor
    of the type ("Unknown type", seen once in bench_cassandra's 3-node section):
    it is sent again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return await wire.query(stmt)
        except Exception as exc:      # noqa: BLE001 - each driver has its own class
            text = str(exc)
            if not ("doesn't exist" in text or "Unknown type" in text) \
                    or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def make_wire(settings):
    if settings.driver == "acsylla":
        from engine.store.sinks.cassandra.wire_acsylla import AcsyllaWire
        return AcsyllaWire(settings)
    if settings.driver == "native":
        from engine.store.sinks.cassandra.wire_native import NativeWire
        return NativeWire(settings)
    from engine.store.sinks.cassandra.wire_datastax import DatastaxWire
    return DatastaxWire(settings)


class CassandraSink(Sink):
    service = "cassandra"
    entry_keys = frozenset({
        "Service", "Critical", "Context", "Hosts", "Timeout", "Connections", "Concurrency",
        "RowBatch", "Consistency", "LocalDC", "FirstWrite", "Replication", "Driver",
        "CACert", "Cert", "Key", "Secure", "Username", "Password"})
    multi_writer = True

    def __init__(self, entry, config):
        super().__init__(entry, config)
        self.keyspace = entry.get("Context") or DEFAULT_KEYSPACE
        if not cql.KEYSPACE_RE.match(self.keyspace):
            raise ValueError(f"cassandra Context: got {self.keyspace!r}, expected a keyspace "
                             "name (letters, digits, _; at most 48)")
        self.contact_points, self.port = self._hosts(entry.get("Hosts") or ["127.0.0.1"])
        self.timeout = _count(entry, "Timeout", DEFAULT_TIMEOUT_MS, 1, None) / 1000.0
        self.connections = _count(entry, "Connections", 1, 1, 64)
        self.row_batch = _count(entry, "RowBatch", MAX_STATEMENTS, 1, 64)
        self.consistency_name = _choice(
            {"Consistency": str(entry.get("Consistency") or "LOCAL_ONE").upper()},
            "Consistency", "LOCAL_ONE", CONSISTENCY)
        self.local_dc = entry.get("LocalDC") or None
        self.first_write = _choice(entry, "FirstWrite", "timestamp", FIRST_WRITE)
        # native: the cheapest per event (docs/cassandra.md); it has no TLS or
        # authentication, so with either the default is acsylla
        tls_or_auth = any(entry.get(k) for k in TLS_OR_AUTH)
        self.driver = _choice(entry, "Driver", "acsylla" if tls_or_auth else "native", DRIVERS)
        if self.driver == "native" and tls_or_auth:
            raise ValueError('cassandra Driver "native" has no TLS or authentication (set: '
                             f'{", ".join(k for k in TLS_OR_AUTH if entry.get(k))}): '
                             'use Driver "acsylla"')
        concurrency = NATIVE_CONCURRENCY if self.driver == "native" else DEFAULT_CONCURRENCY
        self.concurrency = _count(entry, "Concurrency", concurrency, 1, 100_000)
        self.replication = cql.replication_cql(entry.get("Replication"))
        self.schema_version = int(config.schema_version)
        self.wire = None
        self.planner = None
        self.residue = None        # counter updates Cassandra has not confirmed yet
        self._residue_wake = None
        self._residue_task = None
        # what was sent, for benchmarks: statements, requests, partitions, events
        self.statements_sent = self.requests_sent = self.partitions_sent = 0
        self.events_written = 0

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

    def where(self):
        return f"{','.join(self.contact_points)}:{self.port}/{self.keyspace}"

    # ---- life cycle ---------------------------------------------------------
    async def start(self):
        loop = asyncio.get_running_loop()
        if self.residue is None:     # before connecting: orphans are adopted even if down
            self.residue = await loop.run_in_executor(None, self._open_residue)
            self._residue_wake = asyncio.Event()
            self._residue_task = loop.create_task(self._retry_residue())
        if self.wire is None:
            await self._connect()
        if self.residue.items:
            self._residue_wake.set()

    async def _connect(self):
        wire = make_wire(self)
        try:
            await wire.connect()
            await self._check_version(wire)
            await self._apply_retention(wire)
            await wire.prepare(cql.statements(self.keyspace, self.first_write == "paxos"))
        except BaseException:
            await wire.close()
            raise
        self.planner = Planner(wire.codec, paxos=self.first_write == "paxos",
                               max_statements=self.row_batch)
        self.wire = wire

    def _open_residue(self):
        hosts = ",".join(sorted(self.contact_points)) + f":{self.port}"
        prefix = f"cassandra-{self.keyspace}-{zlib.crc32(hosts.encode()):08x}"
        residue = CounterResidue(self.config.spool_directory, prefix)
        residue.open()
        adopted = residue.adopt_orphans()
        if adopted:
            log.warning("adopted counter updates a previous worker could not write",
                        sink="cassandra", keys=adopted)
        return residue

    async def _check_version(self, wire):
        ks = self.keyspace
        tables = await wire.query("SELECT table_name FROM system_schema.tables WHERE "
                                  f"keyspace_name = '{ks}' AND table_name = 'sequences'")
        if not tables:
            raise SchemaMismatch(
                f"cassandra {self.where()}: keyspace {ks!r} has no sequences "
                f"table; create the schema first: tracker schema apply --config FILE")
        rows = await wire.query(f"SELECT seq FROM {ks}.sequences WHERE name = 'DB_VER'")
        if not rows:
            raise SchemaMismatch(f"cassandra {self.where()}: sequences has no DB_VER row; "
                                 f"run tracker schema apply --config FILE")
        if rows[0]["seq"] != self.schema_version:
            raise SchemaMismatch(
                f"cassandra {self.where()}: schema version is {rows[0]['seq']} "
                f"(sequences.DB_VER) but this configuration expects SchemaVersion "
                f"{self.schema_version}; migrate the keyspace or fix SchemaVersion")

    async def close(self):
        if self._residue_task is not None:
            self._residue_task.cancel()
            self._residue_task = None
        if self.residue is not None and self.residue.items and self.wire is not None:
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
        wire, self.wire = self.wire, None
        if wire is not None:
            await wire.close()

    # ---- schema ---------------------------------------------------------------
    async def apply_schema(self):
        """`tracker schema apply`: create what is missing, say what existed."""
        wire = make_wire(self)
        await wire.connect()
        try:
            return await self._apply_schema(wire)
        finally:
            await wire.close()

    async def _apply_schema(self, wire):
        ks = self.keyspace
        existing = await self._existing(wire)
        created, kept = [], []
        for stmt in cql.schema_statements(ks, self.replication):
            kind, name = cql.object_of(stmt)
            (kept if (kind, name) in existing else created).append(f"{kind} {name}")
            await _schema_statement(wire, stmt)
        read = f"SELECT seq FROM {ks}.sequences WHERE name = 'DB_VER'"
        rows = await wire.query(read)
        if not rows:
            await wire.query(f"INSERT INTO {ks}.sequences (name, seq) VALUES ('DB_VER', "
                             f"{int(self.schema_version)}) IF NOT EXISTS")
            rows = await wire.query(read)
            ver = f"sequences DB_VER = {rows[0]['seq']} (written)"
        else:
            ver = f"sequences DB_VER = {rows[0]['seq']} (already there)"
        if rows[0]["seq"] != self.schema_version:
            raise SchemaMismatch(
                f"cassandra {self.where()}: schema version is {rows[0]['seq']} (sequences.DB_VER) "
                f"but this configuration expects SchemaVersion {self.schema_version}")
        where = self.where()
        ttl = await self._apply_retention(wire)
        return [f"{where}: created {len(created)}" + (f" ({', '.join(created)})" if created else ""),
                f"{where}: {len(kept)} already existed" + (f" ({', '.join(kept)})" if kept else ""),
                f"{where}: {ver}"] + ([f"{where}: RetentionDays TTL set on {', '.join(ttl)}"]
                                      if ttl else [])

    async def _apply_retention(self, wire):
        """RetentionDays as the row tables' default_time_to_live (README "Retention");
        the tables changed (none once it is in place)."""
        days = getattr(self.config, "retention_days", 0) or 0
        changed = await retention.apply_cassandra_ttl(wire.query, self.keyspace, days)
        if changed:
            log.info("cassandra row tables given the RetentionDays TTL", days=days,
                     tables=changed)
        return changed

    async def _existing(self, wire):
        ks = self.keyspace
        found = set()
        if await wire.query(f"SELECT keyspace_name FROM system_schema.keyspaces "
                            f"WHERE keyspace_name = '{ks}'"):
            found.add(("keyspace", ks))
        for r in await wire.query(f"SELECT table_name FROM system_schema.tables "
                                  f"WHERE keyspace_name = '{ks}'"):
            found.add(("table", r["table_name"]))
        for r in await wire.query(f"SELECT type_name FROM system_schema.types "
                                  f"WHERE keyspace_name = '{ks}'"):
            found.add(("type", r["type_name"]))
        return found

    # ---- writing ----------------------------------------------------------------
    async def write_batch(self, events):
        if not events:
            return 0
        if self.wire is None:
            raise SinkUnavailable(f"cassandra {self.where()}: not connected (start() first)")
        plan = self.planner.plan(events)
        await self._write_rows(plan.rows)
        if self.planner.settled is not None:
            self.planner.settled.confirm([w.origin for r in plan.rows for w in r.writes
                                          if w.origin is not None])
        await self._write_counters(plan.counters)
        self.partitions_sent += plan.partitions
        self.events_written += plan.events
        return plan.events

    async def _write_rows(self, requests):
        errors = await self.wire.send(requests, self.concurrency)
        self._count(requests)
        failed = [e for e in errors if e is not None]
        if failed:
            raise SinkUnavailable(f"cassandra {self.where()}: {len(failed)} of {len(requests)} "
                                  f"row requests failed, first: {failed[0]!r}"[:600])

    async def _write_counters(self, requests):
        """Send counter requests once; the increments of those that fail go to
        the residue (durable) instead of failing the batch, whose confirmed
        increments must not be sent again."""
        errors = await self.wire.send(requests, self.concurrency)
        self._count(requests)
        failed, unsent, first = {}, 0, None
        for request, exc in zip(requests, errors):
            if exc is None:
                continue
            first = first or exc
            unsent += self.wire.unsent(exc)
            for w in request.writes:
                table, key, n = w.origin
                failed[(table, key)] = failed.get((table, key), 0) + n
        if not failed:
            return
        log.warning("counter updates failed; kept in the residue and retried", sink="cassandra",
                    failed=len(failed), requests=len(requests),
                    failed_requests=sum(e is not None for e in errors), unsent=unsent,
                    error=repr(first)[:300])
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.residue.add, failed)
        except OSError as exc:       # still kept in memory (add merges before saving)
            log.error("could not save the counter residue; it lives in memory only",
                      sink="cassandra", error=str(exc))
        self._residue_wake.set()

    def _count(self, requests):
        self.requests_sent += len(requests)
        self.statements_sent += sum(len(r.writes) for r in requests)

    async def _retry_residue(self):
        """Resend the residue with backoff until Cassandra takes it; adopt
        orphaned residues now and then (a store process that died meanwhile)."""
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
                await loop.run_in_executor(None, self.residue.adopt_orphans)
            if not self.residue.items or self.wire is None:
                backoff = RESIDUE_RETRY_FIRST
                continue
            if await self._send_residue():
                backoff = RESIDUE_RETRY_FIRST
            else:
                backoff = min(backoff * 2, RESIDUE_RETRY_MAX)

    async def _send_residue(self):
        """One resend of the whole residue; True when Cassandra took all of it."""
        sent = self.residue.snapshot()
        requests = self.planner.counter_requests(sent)
        errors = await self.wire.send(requests, self.concurrency)
        taken = {}
        for request, exc in zip(requests, errors):
            if exc is None:
                for w in request.writes:
                    taken[w.origin[:2]] = w.origin[2]
        if taken:
            await asyncio.get_running_loop().run_in_executor(None, self.residue.confirm, taken)
        if len(taken) == len(sent):
            log.info("counter residue written", sink="cassandra", keys=len(taken))
            return True
        return False

    # ---- NATS messages (interface: engine/store/sinks/base.py) --------------------
    async def write_messages(self, logs, counts, updates):
        """Store a group of consumed bus messages: ``logs`` rows (keyed by
        their id: a redelivery rewrites the same row), ``counts`` as
        ``counters`` increments, ``updates`` rows written USING TIMESTAMP of
        their ``updated`` (the latest wins whatever the arrival order). Row
        writes go first; counters only after they all succeeded, and failed
        increments go to the residue, as in ``write_batch``."""
        if not (logs or counts or updates):
            return 0
        if self.wire is None:
            raise SinkUnavailable(f"cassandra {self.where()}: not connected (start() first)")
        c = self.wire.codec
        rows = []
        for r in logs:
            values = [c.day(r["ldate"]), c.ts(int(r["created"])), int(r["ltime"]), c.uuid(r["id"]),
                      r.get("name"), r.get("host"), r.get("hostname"), r.get("owner"),
                      r.get("ip"), r.get("level"), r.get("msg"), r.get("params") or None]
            rows.append((("logs", r["ldate"]), Write("logs", values, 512)))
        for r in updates:
            updated = int(r["updated"])
            values = [r["id"], c.ts(updated), r.get("msg"), r.get("params") or None,
                      updated * 1000]
            rows.append((partition_of("updates", (r["id"],)), Write("updates", values, 512)))
        await self._write_rows(self.planner.row_requests(rows))
        await self._write_counters(self.planner.counter_requests(
            {("counters", (cid,)): int(n) for cid, n in counts.items()}))
        return len(logs) + sum(counts.values()) + len(updates)
