"""Retention (``RetentionDays``): events older than N days leave the stores.

- SQLite is pruned here, in batches of ``BATCH`` events, each batch its own
  short transaction so the store's writer is never held up for long: events
  (``ev``) by ``created``, the first-visit and first-referral rows of those
  events, and the per-day counters (``dailies``, ``outcomes``) of days before
  the cut. Store process 0 runs it at start and then every ``EVERY`` seconds
  (workers/store.py); ``tracker prune`` runs it now.
- Cassandra rows are written with a TTL instead (the tables'
  ``default_time_to_live``, set by the sink and ``tracker schema apply``).
  Counter tables cannot take a TTL; they keep their totals (README "Privacy").

Counters without a day (ips, hits, referrers, browsers, counters) are running
totals and are kept: they hold no event older than anything else.
"""
import time

from engine.store.sinks.sqlite import immediate, open_db

BATCH = 5000
EVERY = 3600.0
DAY_MS = 86_400_000


def cutoff_ms(days, now_ms=None):
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return now_ms - days * DAY_MS


def _day(ms):
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def prune_sqlite(path, days, now_ms=None, batch=BATCH):
    """Delete what is older than ``days``; {table: rows deleted}."""
    cut = cutoff_ms(days, now_ms)
    day = _day(cut)
    deleted = {}
    conn = open_db(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "ev" not in tables:
            raise RuntimeError(f"{path}: not the lean layout (no ev table); start "
                               "`tracker serve` once to migrate it")
        while True:
            n = _in_transaction(conn, "DELETE FROM ev WHERE n IN (SELECT n FROM ev "
                                "WHERE created < ? ORDER BY created LIMIT ?)", (cut, batch))
            _add(deleted, "ev", n)
            if n < batch:
                break
        for table in ("first_visits", "first_refs"):
            _add(deleted, table, _in_transaction(
                conn, f"DELETE FROM {table} WHERE created < ?", (cut,)))
        _add(deleted, "dailies", _in_transaction(conn, "DELETE FROM dailies WHERE day < ?",
                                                 (day,)))
        _add(deleted, "outcomes", _in_transaction(
            conn, "DELETE FROM outcomes WHERE created < ?", (day,)))
        if "logs" in tables:
            _add(deleted, "logs", _in_transaction(conn, "DELETE FROM logs WHERE ldate < ?",
                                                  (day,)))
    finally:
        conn.close()
    return deleted


def _in_transaction(conn, sql, params):
    with immediate(conn) as cur:
        return cur.execute(sql, params).rowcount


def _add(deleted, table, n):
    if n:
        deleted[table] = deleted.get(table, 0) + n


def cassandra_ttl_seconds(days):
    """The row tables' default_time_to_live for ``RetentionDays`` (0: none)."""
    return int(days) * 86400


# Row tables whose rows expire after RetentionDays; counter tables cannot take a TTL
# and ``sequences`` holds the schema version, which must not expire.
CASSANDRA_ROW_TABLES = ("events", "visitors", "sessions", "nodes", "locations", "aliases",
                        "users", "usernames", "referrals", "affiliates", "logs")


async def apply_cassandra_ttl(query, keyspace, days):
    """Set the row tables' default_time_to_live to ``days`` (0: none) where it
    differs; the tables changed. ``query`` runs one CQL statement (the sink's wire)."""
    ttl = cassandra_ttl_seconds(days)
    rows = await query("SELECT table_name, default_time_to_live FROM system_schema.tables "
                       f"WHERE keyspace_name = '{keyspace}'")
    changed = []
    for row in rows:
        name = row["table_name"]
        if name in CASSANDRA_ROW_TABLES and (row["default_time_to_live"] or 0) != ttl:
            await query(f"ALTER TABLE {keyspace}.{name} WITH default_time_to_live = {ttl}")
            changed.append(name)
    return changed
