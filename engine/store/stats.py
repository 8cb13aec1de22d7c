"""`tracker stats`: a summary of a SQLite store (see schema/sqlite.sql).

``collect(path)`` reads the database (read-only, while the store process
writes it: WAL readers never wait for the writer) into a plain dict;
``format_text(stats)`` renders it for a terminal. The CLI does
``print(format_text(collect(path)))``.

Rows per table are those of DESIGN.md §3's names. In the lean layout most are
views; their counts come from the base tables and ev's visit index (``COUNTS``)
instead of materialising the views. A wave-1 file (not migrated yet: no
store has opened it with this version) is read as it is.
"""
import datetime
import errno
import os
import sqlite3

from engine.store.sinks.sqlite import open_db

TABLES = ("events", "visitors", "sessions", "nodes", "locations", "aliases",
          "users", "usernames", "referrals", "affiliates", "dailies", "ips",
          "reqs", "hits", "referrers", "browsers", "outcomes", "counters",
          "logs", "updates", "sequences")

TOP = 10

# Lean layout: how many rows each view of §3 has, without building it.
COUNTS = {
    "events": "SELECT count(*) FROM ev",
    "visitors": "SELECT count(*) FROM first_visits",
    "sessions": "SELECT count(*) FROM (SELECT 1 FROM ev WHERE first = 1 GROUP BY vid, sid)",
    "nodes": "SELECT count(*) FROM (SELECT 1 FROM ev GROUP BY vid, coalesce(ip, ''))",
    "locations": "SELECT count(*) FROM (SELECT 1 FROM ev WHERE latlon IS NOT NULL "
                 "GROUP BY vid, latlon)",
    "aliases": "SELECT count(*) FROM (SELECT 1 FROM ev WHERE uid IS NOT NULL GROUP BY vid, uid)",
    "users": "SELECT count(*) FROM (SELECT 1 FROM ev WHERE uid IS NOT NULL GROUP BY vid, uid)",
    "usernames": "SELECT count(*) FROM (SELECT 1 FROM ev WHERE username IS NOT NULL "
                 "GROUP BY username, vid)",
    "referrals": "SELECT count(*) FROM first_refs",
    "affiliates": "SELECT count(DISTINCT vid) FROM ev WHERE aff IS NOT NULL",
    "reqs": "SELECT count(*) FROM (SELECT 1 FROM ev GROUP BY vid)",
}
_DAY_MS = 86_400_000


def _utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


def collect(path, today=None):
    """Statistics of the SQLite database at ``path``.

    ``today`` (a ``datetime.date``; default: the current UTC date) selects the
    day for ``visitors_today`` / ``events_today``. Tables missing from the file
    count as ``None``. Raises FileNotFoundError when there is no file.

    Returned keys: path, size_bytes, schema_version (sequences.DB_VER or None),
    today ('YYYY-MM-DD'), tables {name: rows or None}, visitors_today,
    events_today, top_urls [(url, total)], top_referrers [(url, total)],
    counters [(id, total)].
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            errno.ENOENT,
            "SQLite database not found (check the sqlite Notify entry's Path; "
            "`tracker serve` creates it on first start)", path)
    day = (today or _utc_today()).isoformat()
    next_day = (datetime.date.fromisoformat(day) + datetime.timedelta(days=1)).isoformat()

    conn = open_db(path, readonly=True)
    try:
        present = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

        def rows(sql, args=()):
            return [tuple(r) for r in conn.execute(sql, args)]

        def scalar(sql, args=()):
            row = conn.execute(sql, args).fetchone()
            return row[0] if row else None

        lean = "ev" in present
        tables = {t: (scalar(COUNTS[t]) if lean and t in COUNTS
                      else scalar(f"SELECT count(*) FROM {t}") if t in present else None)
                  for t in TABLES}
        stats = {
            "path": os.path.abspath(path),
            "size_bytes": sum(os.path.getsize(p) for p in (path, path + "-wal")
                              if os.path.exists(p)),
            "schema_version": (scalar("SELECT seq FROM sequences WHERE name = 'DB_VER'")
                               if "sequences" in present else None),
            "today": day,
            "tables": tables,
            "visitors_today": _visitors_on(scalar, lean, present, day, next_day),
            # Every stored event adds exactly 1 to dailies (ip, day of created),
            # so the day's sum is the day's events without scanning events.
            "events_today": (scalar("SELECT coalesce(sum(total), 0) FROM dailies "
                                    "WHERE day = ?", (day,))
                             if "dailies" in present else None),
            "top_urls": (rows("SELECT url, total FROM hits "
                              "ORDER BY total DESC, url LIMIT ?", (TOP,))
                         if "hits" in present else []),
            "top_referrers": (rows("SELECT url, total FROM referrers "
                                   "ORDER BY total DESC, url LIMIT ?", (TOP,))
                              if "referrers" in present else []),
            "counters": (rows("SELECT id, total FROM counters ORDER BY id")
                         if "counters" in present else []),
        }
    except sqlite3.DatabaseError as e:
        raise sqlite3.DatabaseError(f"{path}: not a readable Tracker database: {e}") from e
    finally:
        conn.close()
    return stats


def _visitors_on(scalar, lean, present, day, next_day):
    """Visitors whose first visit was on ``day``."""
    if lean:
        start = (datetime.date.fromisoformat(day) - datetime.date(1970, 1, 1)).days * _DAY_MS
        return scalar("SELECT count(*) FROM first_visits WHERE created >= ? AND created < ?",
                      (start, start + _DAY_MS))
    if "visitors" not in present:
        return None
    # wave 1: visitors.created is ISO text, so a text range selects one UTC day
    return scalar("SELECT count(*) FROM visitors WHERE created >= ? AND created < ?",
                  (day, next_day))


def _size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _num(n):
    return "missing" if n is None else f"{n:,}"


def _ranking(title, pairs, out):
    out.append(title)
    if not pairs:
        out.append("  (none)")
        return
    width = max(len(f"{total:,}") for _, total in pairs)
    for name, total in pairs:
        out.append(f"  {total:>{width},}  {name}")


def format_text(stats):
    """A plain-text report of ``collect()``'s result."""
    out = [f"Tracker store: {stats['path']}",
           f"  size {_size(stats['size_bytes'])}, schema version "
           f"{stats['schema_version'] if stats['schema_version'] is not None else 'unknown'}",
           "",
           f"Today ({stats['today']} UTC)",
           f"  visitors  {_num(stats['visitors_today'])}",
           f"  events    {_num(stats['events_today'])}",
           "",
           "Rows per table"]
    width = max(len(t) for t in stats["tables"])
    for table, n in stats["tables"].items():
        out.append(f"  {table:<{width}}  {_num(n):>12}")
    out.append("")
    _ranking(f"Top {TOP} URLs (hits)", stats["top_urls"], out)
    out.append("")
    _ranking(f"Top {TOP} referrers", stats["top_referrers"], out)
    out.append("")
    out.append("Counters")
    if stats["counters"]:
        w = max(len(str(i)) for i, _ in stats["counters"])
        for cid, total in stats["counters"]:
            out.append(f"  {cid:<{w}}  {total:,}")
    else:
        out.append("  (none)")
    return "\n".join(out)
