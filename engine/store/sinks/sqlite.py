"""SQLite sink: the embedded default store (DESIGN.md §4).

One file, WAL mode, written by one store process (store-0). Each batch lands
in ONE ``BEGIN IMMEDIATE`` transaction: the events, the rows and the counters
they add either all land or none do, and a failed batch is rolled back and
re-raised so the batcher retries it whole. Full batches may share a
transaction (``write_batch(..., hold=True)``, then ``commit``; the channel
decides, engine/store/batcher.py): a failure then rolls back the held ones
too, and the channel writes them again.

What a batch writes is the lean model of schema/sqlite.sql, written by
engine/store/sinks/sqlite_model.py: each event once into ``ev`` (UUIDs as 16
bytes, ``created`` in ms, long repeated texts through the ``strings``
dictionary), the first visit and the first referral of each visitor as
narrow rows pointing at their event, and the counters of
engine/store/fanout.py coalesced per batch. DESIGN.md §3's tables are views
with their wave-1 names and columns. A wave-1 file is migrated at start-up
(engine/store/sinks/sqlite_migrate.py).

Idempotency by ``eid``: an event is inserted with ``ON CONFLICT (created,
eid) DO NOTHING`` and only the events that landed are fanned out and
counted, in the same transaction: a replayed batch rewrites and counts
nothing.

Event batches are written by the compiled writer
(engine/store/sinks/_sqlite_write.pyx, a connection of its own through
SQLite's C API); ``TRACKER_PURE_SQLITE=1`` selects its pure-Python twin,
sqlite_model.write on this sink's ``sqlite3`` connection. Both write the
same rows (tests/unit/test_sqlite_write.py).

The blocking SQLite work runs in a single-thread executor owned by the sink,
so the store process's event loop keeps reading the spool while a batch is
written.
"""
import asyncio
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote

import orjson

from engine.config import KEYS
from engine.store.fanout import fan_out
from engine.store.sinks import sqlite_model
from engine.store.sinks.base import Sink, SinkUnavailable
from engine.store.sinks.sqlite_migrate import LAYOUT, copy_wave1, rename_wave1
from engine.logs import log
from engine.system.compiled import compiled
from engine.system.threads import named_executor
from schema import schema_text

BUSY_TIMEOUT_MS = 15_000
"""How long a writer waits for another process's transaction (many workers
share one file; a batch transaction holds the write lock for milliseconds)."""

BATCH_EVENTS = 20_000
"""Events per transaction unless the entry says otherwise (or BatchMaxEvents
is larger). A commit's cost grows with the pages it dirties, not its events:
returning visitors insert at random places of the ev_visit index, and a
bigger transaction dirties fewer pages per event and pays its fsyncs and WAL
checkpoint for more of them (~11 % less store CPU per event than 5,000 on a
1.2M-event file, at ~60 MB more peak memory; docs/storage.md)."""

BATCH_AGE_MS = 1000
"""A batch closes at this age unless the entry or the config's BatchMaxAgeMs
says otherwise: long enough to fill BATCH_EVENTS at ~20,000 events/s, short
enough that `tracker stats` and reports lag by about a second."""

SPAN_EVENTS = 100_000
"""Events one transaction may hold across full batches (the entry's
TransactionMaxEvents; no more than a batch's events: one batch per
transaction). Past BATCH_EVENTS the random-key indexes have more leaf pages
than a transaction has events, so each event dirties a page of its own that
the COMMIT writes to the WAL and the checkpoint to the file; a longer
transaction dirties fewer per event (docs/storage.md). Held batches keep only
their raw spool records (~230 bytes per event in memory), not the decoded events."""

SPAN_AGE_MS = 5000
"""How long a transaction may hold full batches (TransactionMaxAgeMs): the
store's readers (`tracker stats`, reports, the daily limits) and other
writers (retention, `tracker erase`, the NATS consumer) wait up to this long
more while the store is saturated, and not at all below one full batch per
BATCH_AGE_MS."""

CACHE_KIB = 32 * 1024
"""The writer's page cache: the indexes' right edges and the dictionary stay
in memory (SQLite's default is 2 MiB)."""


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


@contextmanager
def immediate(conn):
    """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` on ``conn`` (a cursor is yielded),
    rolled back and re-raised on any error: the sink's batches, the schema
    step, erasure and retention all write this way."""
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


_COUNTER_SQL = sqlite_model.COUNTER_SQL


def load_writer():
    """The compiled batch writer's class, or None for the pure-Python twin
    (``TRACKER_PURE_SQLITE=1``)."""
    module = compiled("engine.store.sinks._sqlite_write", "TRACKER_PURE_SQLITE")
    return None if module is None else module.BatchWriter


class TwinWriter:
    """The pure-Python twin behind the compiled writer's interface:
    sqlite_model.write in a ``BEGIN IMMEDIATE`` transaction on the sink's
    connection, committed at once or, for a held batch, by ``commit``."""

    def __init__(self, conn):
        self.conn = conn

    def write(self, batch, strings, hold=False):
        conn = self.conn
        cur = conn.cursor()
        try:
            if not conn.in_transaction:
                cur.execute("BEGIN IMMEDIATE")
            landed = sqlite_model.write(cur, batch, strings)
            if not hold:
                cur.execute("COMMIT")
        except BaseException:
            self._roll_back()
            raise
        return landed

    def commit(self):
        if not self.conn.in_transaction:
            return
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self._roll_back()
            raise

    @property
    def in_transaction(self):
        return self.conn.in_transaction

    def _roll_back(self):
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self):
        pass                    # the connection is the sink's


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
    entry_keys = frozenset({"Service", "Critical", "Path", "BatchMaxEvents", "BatchMaxAgeMs",
                            "TransactionMaxEvents", "TransactionMaxAgeMs"})
    spans = True    # full batches may share a transaction (engine/store/batcher.py)

    def __init__(self, entry, config):
        super().__init__(entry, config)
        path = entry.get("Path")
        if not path:
            raise ValueError('sqlite Notify entry needs a "Path" (the database file)')
        self.path = os.fspath(path)
        self.schema_version = int(config.schema_version)
        self.batch_max_events = _entry_size(
            entry, "BatchMaxEvents", "events",
            max(BATCH_EVENTS, getattr(config, "batch_max_events", 0) or 0))
        self.batch_max_age_ms = _entry_size(entry, "BatchMaxAgeMs", "milliseconds",
                                            _batch_age_ms(config))
        self.span_events = _entry_size(entry, "TransactionMaxEvents", "events", SPAN_EVENTS)
        self.span_age_ms = _entry_size(entry, "TransactionMaxAgeMs", "milliseconds",
                                       SPAN_AGE_MS)
        self._conn = None
        self._writer = None             # BatchWriter (compiled) or TwinWriter, once open
        self._writer_class = load_writer()
        self._executor = None
        self._lock = threading.Lock()  # one batch at a time on the connection
        self._strings = sqlite_model.Strings()

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
                if self._writer_class is None:
                    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                    writer = TwinWriter(conn)
                else:       # the writer's connection holds the big cache
                    writer = self._writer_class(self.path, BUSY_TIMEOUT_MS, CACHE_KIB)
            except sqlite3.Error as e:
                conn.close()
                raise SinkUnavailable(f"sqlite: cannot open {self.path}: {e}") from e
            except BaseException:
                conn.close()
                raise
            self._conn, self._writer = conn, writer

    def _apply_schema(self, conn):
        """One transaction (workers starting together serialise on the write
        lock instead of failing): migrate a wave-1 file, create what is
        missing, check the schema version."""
        try:
            with immediate(conn):
                wave1 = rename_wave1(conn)
                for statement in schema_statements():
                    conn.execute(statement)
                if wave1:
                    events, visits, refs = copy_wave1(conn)
                    log.info("sqlite store migrated to the lean layout", path=self.path,
                             events=events, first_visits=visits, first_refs=refs)
                conn.execute(f"PRAGMA user_version = {LAYOUT}")
                row = conn.execute(
                    "SELECT seq FROM sequences WHERE name = 'DB_VER'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO sequences (name, seq) VALUES ('DB_VER', ?)",
                                 (self.schema_version,))
        except sqlite3.Error as e:
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
        """`tracker schema apply`: create what is missing (migrating a wave-1
        file), say what was there."""
        existed, wave1 = {}, False
        if os.path.exists(self.path):
            with open_db(self.path, readonly=True) as conn:
                existed = dict(conn.execute(
                    "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"))
            wave1 = existed.get("events") == "table"
        self.start_sync()
        try:
            objects = self._conn.execute(
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                "ORDER BY type, name").fetchall()
        finally:
            self.close_sync()
        lines = [f"{self.path}: migrated from the wave-1 layout"] if wave1 else []
        for kind in ("table", "view"):
            names = [n for n, t in objects if t == kind]
            created = [n for n in names if existed.get(n) != kind]
            kept = [n for n in names if existed.get(n) == kind]
            lines.append(f"{self.path}: created {len(created)} {kind}s" +
                         (f" ({', '.join(created)})" if created else ""))
            lines.append(f"{self.path}: {len(kept)} {kind}s already existed" +
                         (f" ({', '.join(kept)})" if kept else ""))
        lines.append(f"{self.path}: sequences DB_VER = {self.schema_version}")
        return lines

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
            writer, self._writer = self._writer, None
            if writer is not None:
                if writer.in_transaction:      # held batches, rolled back by the close
                    self._strings.rolled_back()
                writer.close()
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                conn.close()

    # -- writing

    async def write_batch(self, events, hold=False):
        if not events:
            return 0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._get_executor(),
                                          self.write_batch_sync, events, hold)

    def write_batch_sync(self, events, hold=False):
        """Store a batch (engine.store.fanout.Batch, or a list of events) in
        the open transaction or a new one, committed unless ``hold`` (then
        ``commit`` ends it, with the batches held after it); return how many
        events were new.

        Raises on any failure, after rolling back the whole transaction
        (held batches included); they can then be written again, and
        events already stored are skipped: the fan-out is that of the events
        not stored yet."""
        if not events:
            return 0
        batch = fan_out(events)
        strings = self._strings
        try:
            with self._lock:
                if self._writer is None:
                    raise SinkUnavailable(f"sqlite: {self.path} is not open (start() first)")
                fresh = self._writer.write(batch, strings, hold)
        except BaseException:
            strings.rolled_back()
            raise
        if not hold:
            strings.committed()
        return fresh

    async def commit(self):
        """Commit the batches held (``write_batch(..., hold=True)``)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._get_executor(), self.commit_sync)

    def commit_sync(self):
        strings = self._strings
        try:
            with self._lock:
                if self._writer is None:
                    raise SinkUnavailable(f"sqlite: {self.path} is not open (start() first)")
                self._writer.commit()
        except BaseException:
            strings.rolled_back()
            raise
        strings.committed()

    @contextmanager
    def _transaction(self):
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the sink's connection;
        rolled back and re-raised on any error."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise SinkUnavailable(f"sqlite: {self.path} is not open (start() first)")
            with immediate(conn) as cur:
                yield cur

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


def _batch_age_ms(config):
    """BATCH_AGE_MS, unless the config sets its own BatchMaxAgeMs (a shorter
    one asks for fresher stores, and gets it)."""
    value = getattr(config, "batch_max_age_ms", None)
    return BATCH_AGE_MS if value in (None, KEYS["BatchMaxAgeMs"][2]) else value


def _entry_size(entry, key, unit, default):
    """The entry's ``key`` (a positive int), else ``default``."""
    value = entry.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'sqlite Notify entry "{key}" must be {unit} > 0, not {value!r}')
    return value


def schema_statements():
    """The statements of schema/sqlite.sql, one by one (executescript would
    commit the transaction they run in)."""
    statements, current = [], []
    for line in schema_text("sqlite.sql").splitlines(keepends=True):
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            statements.append(text.strip())
            current = []
    return statements
