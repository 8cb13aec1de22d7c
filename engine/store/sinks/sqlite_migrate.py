"""Moving a wave-1 SQLite store into the lean layout (schema/sqlite.sql).

Wave 1 kept every table of DESIGN.md §3 as a real table, UUIDs and ``created``
as text. The lean layout keeps ``ev`` (each event once), two narrow tables
and the counters, and presents §3's tables as views. ``migrate_wave1`` runs
inside the sink's start-up transaction, before the lean schema is applied:

1. the wave-1 tables that become views are renamed ``w1_<name>``;
2. (the caller applies the lean schema)
3. ``copy_wave1``: events into ``ev`` (in (created, eid) order), the first
   visits and first referrals from wave-1 ``visitors`` / ``referrals``, then
   the ``w1_`` tables are dropped. The counter tables, logs, updates and
   sequences are the same tables in both layouts and stay as they are.

The whole move is one transaction: a crash leaves the wave-1 file untouched.
``PRAGMA user_version`` = ``LAYOUT`` marks a lean file.
"""
import datetime

from engine.store.sinks.sqlite_model import PLAIN, uuid_bytes

LAYOUT = 2

# Wave-1 tables whose names the lean layout gives to views.
BECOME_VIEWS = ("events", "visitors", "sessions", "nodes", "locations", "aliases", "users",
                "usernames", "referrals", "affiliates", "reqs")

_EPOCH = datetime.datetime(1970, 1, 1)
_MS = datetime.timedelta(milliseconds=1)


def iso_to_ms(text):
    """"2026-11-27T23:15:26.123Z" -> milliseconds since the epoch (UTC)."""
    if text is None:
        return None
    return (datetime.datetime.fromisoformat(text.rstrip("Z")) - _EPOCH) // _MS


def _uuid_blob(text):
    return None if text is None else uuid_bytes(text)


def is_wave1(conn):
    row = conn.execute("SELECT type FROM sqlite_master WHERE name = 'events'").fetchone()
    return row is not None and row[0] == "table"


def rename_wave1(conn):
    """Step 1 (in the caller's transaction); True when the file was wave 1."""
    if not is_wave1(conn):
        return False
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for name in BECOME_VIEWS:
        if name in present:
            conn.execute(f"ALTER TABLE {name} RENAME TO w1_{name}")
    return True


def copy_wave1(conn):
    """Step 3 (in the caller's transaction, after the lean schema); returns
    (events, first visits, first referrals) copied."""
    conn.create_function("tracker_ms", 1, iso_to_ms, deterministic=True)
    conn.create_function("tracker_uuid", 1, _uuid_blob, deterministic=True)
    conn.execute("INSERT INTO strings (text) SELECT text FROM ("
                 "SELECT url AS text FROM w1_events UNION SELECT last FROM w1_events "
                 "UNION SELECT browser FROM w1_events) WHERE text IS NOT NULL "
                 "ON CONFLICT (text) DO NOTHING")
    plain = ", ".join(PLAIN)
    plain_e = ", ".join(f"e.{c}" for c in PLAIN)
    events = conn.execute(
        f"INSERT INTO ev (created, eid, vid, sid, first, url, last, browser, latlon, vp, "
        f"params, {plain}) "
        f"SELECT tracker_ms(e.created), tracker_uuid(e.eid), tracker_uuid(e.vid), "
        f"tracker_uuid(e.sid), coalesce(e.first, 0), su.id, sl.id, sb.id, e.latlon, e.vp, "
        f"nullif(e.params, '{{}}'), {plain_e} "
        f"FROM w1_events e LEFT JOIN strings su ON su.text = e.url "
        f"LEFT JOIN strings sl ON sl.text = e.last LEFT JOIN strings sb ON sb.text = e.browser "
        f"ORDER BY e.created, e.eid "
        f"ON CONFLICT (created, eid) DO NOTHING").rowcount
    visits = conn.execute(
        "INSERT INTO first_visits (vid, created, n) "
        "SELECT ev.vid, ev.created, ev.n FROM w1_visitors v "
        "JOIN ev ON ev.created = tracker_ms(v.created) AND ev.eid = tracker_uuid(v.eid) "
        "WHERE true ON CONFLICT (vid) DO NOTHING").rowcount if _has(conn, "w1_visitors") else 0
    refs = conn.execute(
        "INSERT INTO first_refs (vid, ref, created, n) "
        "SELECT ev.vid, r.ref, ev.created, ev.n FROM w1_referrals r "
        "JOIN ev ON ev.created = tracker_ms(r.created) AND ev.eid = tracker_uuid(r.eid) "
        "WHERE true ON CONFLICT (vid) DO NOTHING").rowcount if _has(conn, "w1_referrals") else 0
    for name in BECOME_VIEWS:
        conn.execute(f"DROP TABLE IF EXISTS w1_{name}")
    return events, visits, refs


def _has(conn, name):
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None
