"""Reports when Cassandra is the only store: its ``events`` table copied
into a temporary embedded store, which the same report SQL then reads.

Why a copy: the reports are distinct counts, joins and ordered walks over a
visitor's events (exposure before outcome, funnel steps, first touch), which
CQL cannot answer server-side, and every figure must equal the embedded
store's. The copy goes through the SQLite sink's own writer (engine/store/
sinks/sqlite.py), so ``first_visits`` and ``first_refs`` are derived by the
same earliest-wins rule as on a collector that stores to SQLite, and the
reports cannot drift apart per store.

Cost: one paged full scan of ``events`` (every event: some figures, such as
"converted at any time", look outside --since/--until). It grows with the
keyspace; docs/reports.md gives the measured rate.
"""
import os
import time

from engine.event import COLUMNS
from engine.store.sinks.base import SinkUnavailable

PAGE = 5000          # rows per CQL page
BATCH = 20000        # events per SQLite transaction

# ``created`` is read as milliseconds (the driver's datetime would drop the
# time zone question on the floor); the other columns by their own names.
_SELECT = "SELECT toUnixTimestamp(created) AS created_ms, {columns} FROM {keyspace}.events"


def _columns():
    return [c for c in COLUMNS if c != "created"]


def _event(row, names):
    """A Cassandra events row -> the sparse event dict (engine/event.py)."""
    ev = {"created": row[0]}
    for name, value in zip(names, row[1:]):
        if value is None:
            continue
        if name in ("eid", "vid", "sid"):
            value = str(value)
        elif name == "latlon":
            value = [value.lat, value.lon]
        elif name == "vp":
            value = [value.w, value.h]
        elif name == "params":
            value = dict(value)
        ev[name] = value
    ev["first"] = bool(ev.get("first", False))
    ev.setdefault("params", {})
    return ev


def copy_events(entry, config, path, progress=None):
    """Copy every event of the Cassandra store ``entry`` (a Notify dict) into
    a new SQLite store at ``path``; return (events copied, seconds)."""
    from engine.store.sinks.cassandra.sink import CassandraSink
    from engine.store.sinks.cassandra.wire_datastax import DatastaxWire
    from engine.store.sinks.sqlite import SQLiteSink
    began = time.monotonic()
    source = CassandraSink(entry, config)
    target = SQLiteSink({"Service": "sqlite", "Path": os.fspath(path)}, config)
    target.start_sync()
    cluster = DatastaxWire(source)._new_cluster()
    try:
        copied = _scan(cluster, source, target, progress)
    finally:
        cluster.shutdown()
        target.close_sync()
    return copied, time.monotonic() - began


def _scan(cluster, source, target, progress):
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable
    from cassandra.cluster import EXEC_PROFILE_DEFAULT
    from cassandra.query import SimpleStatement, tuple_factory
    names = _columns()
    cql = _SELECT.format(columns=", ".join(names), keyspace=source.keyspace)
    try:
        session = cluster.connect()
        # plain tuples (_event reads by position), cheaper than named ones
        profile = session.execution_profile_clone_update(EXEC_PROFILE_DEFAULT,
                                                         row_factory=tuple_factory)
        rows = session.execute(SimpleStatement(cql, fetch_size=PAGE), execution_profile=profile,
                               timeout=max(source.timeout, 60.0))
        copied, batch = 0, []
        for row in rows:
            batch.append(_event(row, names))
            if len(batch) >= BATCH:
                copied += _store(target, batch, progress, copied)
                batch = []
        return copied + _store(target, batch, progress, copied)
    except (NoHostAvailable, DriverException, OSError) as exc:
        raise SinkUnavailable(f"cassandra {source.where()}: cannot read events: {exc}") from None


def _store(target, batch, progress, before):
    if not batch:
        return 0
    target.write_batch_sync(batch)
    if progress is not None:
        progress(before + len(batch))
    return len(batch)
