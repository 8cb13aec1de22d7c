"""SQLite sink: the embedded default store (DESIGN.md §4).

One file, WAL mode, written by one store process. Each batch is ONE
``BEGIN IMMEDIATE`` transaction: the events, the row tables they fan out to and
the counters they add either all land or none do, and a failed batch is rolled
back and re-raised so the batcher retries it whole.

Idempotency by ``eid`` (a replayed batch rewrites nothing and counts nothing):
inside the transaction the sink first looks up which of the batch's eids are
already in ``events`` (UNIQUE(eid) index) and drops those events, together
with duplicate eids inside the batch. Only the remaining, genuinely new events
are inserted and fanned out. Because an event's row and every counter increment
it causes commit in the same transaction, "eid already stored" means "already
counted", so counters are never double-counted by spool replays or retries.

What a batch writes — rows per table with their winning event, counter
increments per key — is engine/store/fanout.py's ``fan_out``, as for every
sink; this module converts values and writes them. Row tables are
order-independent upserts: first-write-wins tables (visitors, sessions,
referrals, aliases, users, usernames) keep the EARLIEST event by
(created, eid); last-seen tables (nodes, locations, affiliates) keep the
LATEST. Counters are written once per distinct key as ``total = total + n``.

One process writes the file: store-0 (workers/store.py). The blocking
SQLite work runs in a single-thread executor owned by the sink, so the
store process's event loop keeps reading the spool while a batch is written.
"""
import asyncio
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from operator import itemgetter
from urllib.parse import quote

import orjson

from engine.store import fanout
from engine.event import COLUMNS
from engine.store.fanout import EARLIEST, fan_out
from engine.store.sinks.base import Sink, SinkUnavailable
from engine.system.threads import named_executor
from schema import schema_text

BUSY_TIMEOUT_MS = 15_000
"""How long a writer waits for another process's transaction (many workers
share one file; a batch transaction holds the write lock for milliseconds)."""

_IN_CHUNK = 500  # eids per "WHERE eid IN (...)" lookup, well under SQLite's variable limit


def open_db(path, readonly=False):
    """Return a configured ``sqlite3`` connection to ``path``.

    Autocommit mode (``isolation_level=None``: transactions are explicit
    ``BEGIN IMMEDIATE`` / ``COMMIT``), usable from another thread than the one
    that opened it, busy timeout of ``BUSY_TIMEOUT_MS``, ``synchronous=FULL``
    and, unless ``readonly``, WAL journal mode. FULL makes each COMMIT fsync
    the WAL: the spool forgets a batch once this sink has committed it, so the
    commit must survive a power cut, not only a process crash (NORMAL in WAL
    mode may roll the last commits back). It costs one fsync per batch.
    ``readonly=True`` opens the file with ``mode=ro`` (it must exist) and
    changes nothing in it.
    """
    path = os.fspath(path)
    if readonly:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro",
                               uri=True, isolation_level=None,
                               check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(path, isolation_level=None,
                               check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
        if not readonly:
            _enable_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn):
    """Switch to WAL, waiting out other processes doing the same.

    Several workers opening a new file at once race for the exclusive lock
    that the journal-mode change needs, and SQLite reports that race as
    "database is locked" at once instead of calling the busy handler.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# ---------------------------------------------------------------- conversions

_last_second = (None, "")  # (epoch second, "YYYY-MM-DDTHH:MM:SS"), swapped atomically


def iso_ms(ms):
    """Milliseconds since the epoch -> "2026-11-27T23:15:26.123Z" (UTC)."""
    global _last_second
    s, frac = divmod(int(ms), 1000)
    last = _last_second
    if last[0] == s:
        text = last[1]
    else:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
        _last_second = (s, text)
    return "%s.%03dZ" % (text, frac)


def _latlon_text(value):
    lat, lon = value
    return f"{float(lat)!r},{float(lon)!r}"


def _vp_text(value):
    w, h = value
    return f"{int(w)}x{int(h)}"


def _stored_values(ev):
    """The event's stored column values (see schema/sqlite.sql): a copy of
    the event with the converted fields, plus ``day``. Sparse like the event
    (absent fields stay absent), so its keys depend only on the event's keys
    and each shape of event gets one precomputed plan (``_plan``)."""
    v = ev.copy()
    created = iso_ms(ev["created"])
    v["created"] = created
    v["day"] = created[:10]
    v["first"] = 1 if ev.get("first") else 0
    latlon = ev.get("latlon")
    if latlon:
        v["latlon"] = _latlon_text(latlon)
    vp = ev.get("vp")
    if vp:
        v["vp"] = _vp_text(vp)
    v["params"] = orjson.dumps(ev.get("params") or {}).decode()
    return v


# ---------------------------------------------------------------- statements

_COLUMN_SET = frozenset(COLUMNS)


def _events_sql(columns):
    """INSERT for events carrying exactly ``columns``.

    Events are sparse (a page view has ~12 of the 40 columns); binding only
    the present ones instead of 40 values, most of them NULL, is most of the
    cost of the insert through the sqlite3 module."""
    return "INSERT OR IGNORE INTO events (%s) VALUES (%s)" % (
        ", ".join(columns), ", ".join("?" * len(columns)))


class _RowTable:
    """An upsert table keyed by ``key``. Within a batch fan_out picked the
    winning event per key; across batches the upsert keeps the earliest or
    the latest row by (created, eid), the same order.

    A row is a tuple of the columns an event carries, in ``cols`` order: the
    key first, then created and eid (always present), then the rest."""

    def __init__(self, name, key, cols, keep):
        self.name, self.key, self.keep = name, key, keep
        self.cols = key + ("created", "eid") + tuple(c for c in cols if c not in key)
        self.nkey = len(key)

    def shaped(self, present):
        """(getter, upsert SQL) for stored values carrying the keys ``present``.
        A column left out of the INSERT is NULL in ``excluded``, so the UPDATE
        still sets every column: the winning event replaces the whole row."""
        cols = [c for c in self.cols if c in present]
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.cols[self.nkey:])
        sql = (f"INSERT INTO {self.name} ({', '.join(cols)}) "
               f"VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates} "
               f"WHERE (excluded.created, excluded.eid) {'<' if self.keep == EARLIEST else '>'} "
               f"({self.name}.created, {self.name}.eid)")
        return itemgetter(*cols), sql

    @staticmethod
    def write(cur, rows):
        """Upsert the reduced rows, one executemany per shape."""
        by_sql = {}
        for row, sql in rows:
            shaped = by_sql.get(sql)
            if shaped is None:
                shaped = by_sql[sql] = []
            shaped.append(row)
        for sql, shaped in by_sql.items():
            cur.executemany(sql, shaped)


ROW_TABLES = tuple(_RowTable(*spec) for spec in fanout.ROW_TABLES)
(VISITORS, SESSIONS, NODES, LOCATIONS, ALIASES, USERS, USERNAMES, REFERRALS,
 AFFILIATES) = ROW_TABLES


_DERIVED = {"created", "day", "first", "params", "ip"}   # always in the stored values


class _Plan:
    """How to store events of one shape (their keys, in order): the events
    INSERT and, per row table, the row getter and upsert. Built once per
    shape; a route's events share a few shapes."""
    __slots__ = ("events", "visitors", "sessions", "nodes", "locations", "aliases",
                 "users", "usernames", "referrals", "affiliates")

    def __init__(self, keys):
        columns = [c for c in keys if c in _COLUMN_SET]
        self.events = (itemgetter(*columns), _events_sql(columns))
        present = set(keys) | _DERIVED
        for t in ROW_TABLES:
            setattr(self, t.name, t.shaped(present))


_PLANS = {}
_PLANS_MAX = 4096   # key orders come from clients (JSON bodies): bound the cache


def _plan(ev):
    keys = tuple(ev)
    plan = _PLANS.get(keys)
    if plan is None:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        plan = _PLANS[keys] = _Plan(keys)
    return plan


def _counter_sql(table, key):
    return (f"INSERT INTO {table} ({', '.join(key)}, total) "
            f"VALUES ({', '.join('?' * (len(key) + 1))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET total = total + excluded.total")


COUNTER_TABLES = fanout.COUNTER_TABLES
_COUNTER_SQL = {t: _counter_sql(t, k) for t, k in COUNTER_TABLES.items()}


# Logs: a redelivered message with the same id (and time) is the same row.
_LOGS_SQL = ("INSERT OR IGNORE INTO logs (ldate, created, ltime, id, name, host, hostname, "
             "owner, ip, level, msg, params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
# Updates: the row keeps the latest message by `updated`, whatever the arrival order.
_UPDATES_SQL = ("INSERT INTO updates (id, updated, msg, params) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, "
                "msg = excluded.msg, params = excluded.params "
                "WHERE updates.updated IS NULL OR excluded.updated >= updates.updated")


# ---------------------------------------------------------------- the sink

class SQLiteSink(Sink):
    service = "sqlite"
    entry_keys = frozenset({"Service", "Critical", "Path"})

    def __init__(self, entry, config):
        super().__init__(entry, config)
        path = entry.get("Path")
        if not path:
            raise ValueError('sqlite Notify entry needs a "Path" (the database file)')
        self.path = os.fspath(path)
        self.schema_version = int(config.schema_version)
        self._conn = None
        self._executor = None
        self._lock = threading.Lock()  # one batch at a time on the connection

    # -- life cycle

    def _get_executor(self):
        if self._executor is None:
            self._executor = named_executor("sqlite")
        return self._executor

    async def start(self):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._get_executor(), self.start_sync)

    def start_sync(self):
        """Open the file, apply the schema, check the schema version."""
        with self._lock:
            if self._conn is not None:
                return
            try:
                parent = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(parent, exist_ok=True)
                conn = open_db(self.path)
            except (OSError, sqlite3.Error) as e:
                raise SinkUnavailable(f"sqlite: cannot open {self.path}: {e}") from e
            try:
                self._apply_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    def _apply_schema(self, conn):
        try:
            # One transaction: concurrent workers starting together serialise
            # on the write lock (busy timeout) instead of failing.
            conn.executescript("BEGIN IMMEDIATE;\n" + schema_text("sqlite.sql") + "\nCOMMIT;")
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT seq FROM sequences WHERE name = 'DB_VER'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO sequences (name, seq) VALUES ('DB_VER', ?)",
                                 (self.schema_version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SinkUnavailable(f"sqlite: cannot prepare {self.path}: {e}") from e
        if row is not None and row[0] != self.schema_version:
            raise SinkUnavailable(
                f"sqlite: {self.path} has schema version {row[0]} (sequences.DB_VER) "
                f"but this configuration expects SchemaVersion {self.schema_version}; "
                f"migrate the database or fix SchemaVersion")

    def prepare(self):
        """Supervisor, before the fork: create the file and schema once, so
        workers starting together only open it."""
        self.start_sync()
        self.close_sync()

    async def apply_schema(self):
        """`tracker schema apply`: create what is missing, say what was there."""
        existed = set()
        if os.path.exists(self.path):
            with open_db(self.path, readonly=True) as conn:
                existed = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.start_sync()
        try:
            tables = [r[0] for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        finally:
            self.close_sync()
        created = [t for t in tables if t not in existed]
        kept = [t for t in tables if t in existed]
        return [f"{self.path}: created {len(created)} tables" +
                (f" ({', '.join(created)})" if created else ""),
                f"{self.path}: {len(kept)} tables already existed" +
                (f" ({', '.join(kept)})" if kept else ""),
                f"{self.path}: sequences DB_VER = {self.schema_version}"]

    async def close(self):
        ex = self._executor
        if ex is None:
            self.close_sync()
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(ex, self.close_sync)
        finally:
            self._executor = None
            ex.shutdown(wait=False)   # never block the loop on a stuck write

    def close_sync(self):
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                conn.close()

    # -- writing

    async def write_batch(self, events):
        if not events:
            return 0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._get_executor(),
                                          self.write_batch_sync, events)

    def write_batch_sync(self, events):
        """Store a batch (engine.store.fanout.Batch, or a list of events) in
        one transaction; return how many events were new.

        Raises (after rolling back) on any failure; the whole batch can then
        be retried, and events already stored are skipped: the fan-out is
        that of the events not stored yet."""
        if not events:
            return 0
        batch = fan_out(events)
        with self._transaction() as cur:
            fresh = self._unseen(cur, batch)
            if fresh:
                self._write(cur, batch if len(fresh) == len(batch) else fan_out(fresh))
        return len(fresh)

    @contextmanager
    def _transaction(self):
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the sink's connection;
        rolled back and re-raised on any error."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise SinkUnavailable(f"sqlite: {self.path} is not open (start() first)")
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            finally:
                cur.close()

    # -- bus messages (NATS log / count / update; see engine/nats/messages.py)

    async def write_messages(self, logs, counts, updates):
        """Store a group of consumed messages in ONE transaction: ``logs``
        (list of log records), ``counts`` (counter id -> n, written as
        ``total = total + n``), ``updates`` (list of update records). Raises
        after rolling back, so a retried group never double-counts."""
        if not (logs or counts or updates):
            return 0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._get_executor(), self.write_messages_sync,
                                          logs, counts, updates)

    def write_messages_sync(self, logs, counts, updates):
        log_rows = [(r["ldate"], iso_ms(r["created"]), r["ltime"], r["id"], r.get("name"),
                     r.get("host"), r.get("hostname"), r.get("owner"), r.get("ip"),
                     r.get("level"), r.get("msg"),
                     orjson.dumps(r.get("params") or {}).decode()) for r in logs]
        count_rows = [(cid, n) for cid, n in counts.items()]
        update_rows = [(r["id"], iso_ms(r["updated"]), r.get("msg"),
                        orjson.dumps(r.get("params") or {}).decode()) for r in updates]
        with self._transaction() as cur:
            if log_rows:
                cur.executemany(_LOGS_SQL, log_rows)
            if count_rows:
                cur.executemany(_COUNTER_SQL["counters"], count_rows)
            if update_rows:
                cur.executemany(_UPDATES_SQL, update_rows)
        return len(log_rows) + sum(counts.values()) + len(update_rows)

    @staticmethod
    def _unseen(cur, events):
        """Events of the batch (unique by eid) whose eid is not stored yet,
        in batch order."""
        by_eid = {ev["eid"]: ev for ev in events}
        eids = list(by_eid)
        for i in range(0, len(eids), _IN_CHUNK):
            chunk = eids[i:i + _IN_CHUNK]
            sql = "SELECT eid FROM events WHERE eid IN (%s)" % ",".join("?" * len(chunk))
            for (eid,) in cur.execute(sql, chunk):
                by_eid.pop(eid, None)
        return list(by_eid.values())

    @staticmethod
    def _write(cur, batch):
        """Insert the batch's events, upsert its rows, add its counters."""
        events_by_sql = {}
        stored = {}
        for ev in batch:
            v = _stored_values(ev)
            getter, sql = _plan(ev).events
            shaped = events_by_sql.get(sql)
            if shaped is None:
                shaped = events_by_sql[sql] = []
            shaped.append(getter(v))
            v["ip"] = ev.get("ip") or ""
            stored[id(ev)] = v
        for sql, shaped in events_by_sql.items():
            cur.executemany(sql, shaped)
        rows = batch.rows
        for t in ROW_TABLES:
            winners = rows[t.name]
            if winners:
                name = t.name
                t.write(cur, [_row(getattr(_plan(ev), name), stored[id(ev)])
                              for ev in winners.values()])
        for table, c in batch.counters.items():
            if c:
                cur.executemany(_COUNTER_SQL[table], [k + (n,) for k, n in c.items()])


def _row(shaped, values):
    getter, sql = shaped
    return getter(values), sql
