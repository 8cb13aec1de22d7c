"""Erasure in the embedded store: every row of given visitors (by vid, or by
the uids they logged in as), deleted in one transaction.

The tables are found by their columns rather than listed, so the same code
serves every layout a file may have: each base table with a ``vid`` column
loses the visitors' rows; a table with a ``uid`` column (and no ``vid``) loses
the uids' rows. Views are left alone (they show what the tables hold). A
column declared BLOB holds a UUID's 16 bytes, any other its canonical text.

Counters keyed by something other than the visitor (addresses, urls, user
agents, days) are aggregates shared with other visitors and are not touched;
docs in README "Privacy" say so.
"""
import uuid

from engine.store.sinks.sqlite import immediate, open_db


def _columns(conn):
    """{table: {column: declared type}} for the base tables."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {t: {r[1]: (r[2] or "").upper() for r in conn.execute(f'PRAGMA table_info("{t}")')}
            for t in tables}


def _vid_value(vid, declared):
    u = uuid.UUID(vid)
    return u.bytes if declared == "BLOB" else str(u)


def _vids_of_uids(conn, columns, uids):
    """Every visitor id any table links to one of ``uids``, as canonical text."""
    found = set()
    for table, cols in columns.items():
        if "vid" not in cols or "uid" not in cols:
            continue
        for uid in uids:
            for (vid,) in conn.execute(f'SELECT DISTINCT vid FROM "{table}" WHERE uid = ?',
                                       (uid,)):
                found.add(str(uuid.UUID(bytes=vid)) if isinstance(vid, bytes)
                          else str(uuid.UUID(vid)))
    return found


def erase(path, vids, uids):
    """Delete the visitors' rows from the file at ``path``; {table: rows deleted}
    for the tables that lost any. Idempotent: a second call deletes nothing."""
    conn = open_db(path)
    try:
        with immediate(conn):
            columns = _columns(conn)
            everyone = set(vids) | _vids_of_uids(conn, columns, uids)
            return _delete(conn, columns, everyone, uids)
    finally:
        conn.close()


def _delete(conn, columns, vids, uids):
    deleted = {}
    for table, cols in sorted(columns.items()):
        n = 0
        if "vid" in cols:
            for vid in vids:
                n += conn.execute(f'DELETE FROM "{table}" WHERE vid = ?',
                                  (_vid_value(vid, cols["vid"]),)).rowcount
        elif "uid" in cols:
            for uid in uids:
                n += conn.execute(f'DELETE FROM "{table}" WHERE uid = ?', (uid,)).rowcount
        if n:
            deleted[table] = n
    return deleted
