"""``tracker report``: the questions the events' growth fields exist for.

``run(kind, conn, start, end, **options) -> Report`` runs one kind on a
read-only connection to the embedded SQLite store (lean layout,
schema/sqlite.sql); ``start`` / ``end`` bound ``created`` as [start, end) in
ms since the epoch (engine/reports/timerange.py parses --since / --until).
Kinds: traffic, pages, referrers, campaigns (engine/reports/traffic.py),
funnels, loops (engine/reports/growth.py), experiments
(engine/reports/experiments.py). The CLI prints a Report with
engine/reports/render.py; the dashboard draws the same Reports.
"""
from engine.reports import experiments, growth, traffic

KINDS = ("traffic", "pages", "referrers", "campaigns", "funnels", "experiments", "loops")


class ReportError(Exception):
    """A report that cannot run as asked (a clear message for the user)."""


def check(kind, steps=None):
    """Raise ReportError for arguments no store can answer (before any copy
    of a store is made)."""
    if kind not in KINDS:
        raise ReportError(f"unknown report {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "funnels" and not steps:
        raise ReportError("funnels needs its steps: --steps NAME,NAME,... (event enames, "
                          "in order)")


def run(kind, conn, start, end, steps=None, outcome=None, control=None):
    check(kind, steps)
    if kind == "experiments":
        return experiments.report(conn, start, end, outcome=outcome, control=control)
    if kind == "funnels":
        return growth.funnels(conn, start, end, steps)
    if kind == "loops":
        return growth.loops(conn, start, end)
    return getattr(traffic, kind)(conn, start, end)


def open_store(path):
    """A read-only connection to the SQLite store at ``path`` (lean layout)."""
    import os
    import sqlite3
    from engine.store.sinks.sqlite import open_db
    if not os.path.isfile(path):
        raise ReportError(f"{path}: SQLite store not found (check the sqlite Notify entry's "
                          "Path; `tracker serve` creates it on first start)")
    conn = open_db(path, readonly=True)
    try:
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ReportError(f"{path}: not a readable Tracker database: {exc}") from None
    if "ev" not in tables:
        conn.close()
        raise ReportError(f"{path}: not in the current layout (no table ev); start "
                          "`tracker serve` once to migrate it")
    return conn
