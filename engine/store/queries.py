"""The reports' SQL over the lean SQLite layout (schema/sqlite.sql).

The representative query of each `tracker report` kind, run on a read-only
connection (``open_db(path, readonly=True)``) while the store process writes:
WAL readers see the last committed batch and never wait for the writer. Each
function takes the connection and a time range ``[start, end)`` in ms since
the epoch (UTC) and returns a list of tuples, names and UUIDs as text.

They read the base tables, not §3's views: ``ev`` by its indexes (``ev_key``
for time ranges, ``ev_visit`` for a visitor's and a session's events,
``ev_xid`` / ``ev_outcome`` for the few events that carry an experiment or an
outcome), ``first_visits`` / ``first_refs`` for first-touch attribution, and
the ``strings`` dictionary for url / last / browser texts, resolved after
grouping. ``loadtest/bench_store.py`` times every kind at 1M events.
"""
from engine.store.sinks.sqlite_model import uuid_text

DAY_MS = 86_400_000

# SQL text of a 16-byte UUID, for joining a text column (ref) to a visitor.
UUID_SQL = ("lower(substr(hex({0}), 1, 8) || '-' || substr(hex({0}), 9, 4) || '-' || "
            "substr(hex({0}), 13, 4) || '-' || substr(hex({0}), 17, 4) || '-' || "
            "substr(hex({0}), 21))")


def _day(ms_day):
    import datetime
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=ms_day)).isoformat()


def traffic(conn, start, end):
    """Per UTC day: events, distinct visitors, distinct sessions, new
    visitors (first visits that day). [(day, events, visitors, sessions, new)]"""
    per_day = conn.execute(
        "SELECT created / ? AS d, count(*), count(DISTINCT vid), count(DISTINCT vid || sid) "
        "FROM ev WHERE created >= ? AND created < ? GROUP BY d",
        (DAY_MS, start, end)).fetchall()
    new = dict(conn.execute(
        "SELECT created / ? AS d, count(*) FROM first_visits "
        "WHERE created >= ? AND created < ? GROUP BY d", (DAY_MS, start, end)).fetchall())
    return [(_day(d), events, visitors, sessions, new.get(d, 0))
            for d, events, visitors, sessions in per_day]


def pages(conn, start, end, limit=50):
    """The most viewed urls: [(url, events, distinct visitors)]."""
    return conn.execute(
        "SELECT s.text, p.events, p.visitors FROM ("
        "  SELECT url, count(*) AS events, count(DISTINCT vid) AS visitors FROM ev "
        "  WHERE created >= ? AND created < ? AND url IS NOT NULL "
        "  GROUP BY url ORDER BY events DESC LIMIT ?) p "
        "JOIN strings s ON s.id = p.url ORDER BY p.events DESC, s.text",
        (start, end, limit)).fetchall()


def referrers(conn, start, end, limit=50):
    """Referral codes by the visitors they brought (first referral in the
    range) and those visitors' events: [(ref, visitors, events)]."""
    return conn.execute(
        "SELECT r.ref, count(*) AS visitors, sum(("
        "  SELECT count(*) FROM ev e WHERE e.vid = r.vid)) AS events "
        "FROM first_refs r WHERE r.created >= ? AND r.created < ? "
        "GROUP BY r.ref ORDER BY visitors DESC, r.ref LIMIT ?",
        (start, end, limit)).fetchall()


def campaigns(conn, start, end, limit=50):
    """First-touch campaigns: visitors whose first visit in the range carried
    (source, medium, campaign), and how many of them converted (an event
    with an outcome, at any time): [(source, medium, campaign, visitors,
    converters)]."""
    return conn.execute(
        "SELECT e.source, e.medium, e.campaign, count(*) AS visitors, "
        "  sum(EXISTS (SELECT 1 FROM ev o WHERE o.vid = f.vid AND o.outcome IS NOT NULL)) "
        "FROM first_visits f JOIN ev e ON e.n = f.n "
        "WHERE f.created >= ? AND f.created < ? "
        "  AND (e.source IS NOT NULL OR e.medium IS NOT NULL OR e.campaign IS NOT NULL) "
        "GROUP BY e.source, e.medium, e.campaign ORDER BY visitors DESC LIMIT ?",
        (start, end, limit)).fetchall()


def funnel(conn, start, end, steps):
    """Sessions that reached each step, in order: step k counts the
    sessions with an event named ``steps[k]`` later (by created) than the
    session's step k-1. [(step, sessions)]"""
    if not steps:
        return []
    parts = ["s AS (SELECT vid, sid, created, ename FROM ev "
             "WHERE created >= ? AND created < ? AND ename IN (%s))" % ",".join("?" * len(steps)),
             "f0 AS (SELECT vid, sid, min(created) AS t FROM s WHERE ename = ? "
             "GROUP BY vid, sid)"]
    for k in range(1, len(steps)):
        parts.append(
            f"f{k} AS (SELECT s.vid, s.sid, min(s.created) AS t FROM s "
            f"JOIN f{k - 1} p ON p.vid = s.vid AND p.sid = s.sid AND s.created > p.t "
            f"WHERE s.ename = ? GROUP BY s.vid, s.sid)")
    counts = ", ".join(f"(SELECT count(*) FROM f{k})" for k in range(len(steps)))
    sql = "WITH " + ", ".join(parts) + " SELECT " + counts
    row = conn.execute(sql, (start, end, *steps, *steps)).fetchone()
    return list(zip(steps, row))


def experiments(conn, start, end):
    """Per experiment and split: distinct visitors exposed (an event with
    xid and split in the range) and converters (a later event of the same
    visitor and xid with an outcome). [(xid, split, exposed, converters)]"""
    return conn.execute(
        "WITH x AS (SELECT xid, split, vid, min(created) AS t FROM ev "
        "  WHERE xid IS NOT NULL AND split IS NOT NULL AND created >= ? AND created < ? "
        "  GROUP BY xid, split, vid) "
        "SELECT xid, split, count(*) AS exposed, sum(EXISTS ("
        "  SELECT 1 FROM ev o WHERE o.xid = x.xid AND o.vid = x.vid AND o.created > x.t "
        "  AND o.outcome IS NOT NULL)) AS converters "
        "FROM x GROUP BY xid, split ORDER BY xid, split",
        (start, end)).fetchall()


def loops(conn, start, end, limit=50):
    """The referral loop per referrer: visitors it brought (first referral in
    the range), how many of them converted (an event with an outcome), and
    how many visitors those visitors referred in turn (a visitor's referral
    code is its vid). [(ref, brought, converted, their referrals)]"""
    return conn.execute(
        "WITH g AS (SELECT ref, count(*) AS n FROM first_refs GROUP BY ref) "
        "SELECT r.ref, count(*) AS brought, "
        "  sum(EXISTS (SELECT 1 FROM ev o WHERE o.vid = r.vid AND o.outcome IS NOT NULL)), "
        "  coalesce(sum(g.n), 0) "
        "FROM first_refs r LEFT JOIN g ON g.ref = " + UUID_SQL.format("r.vid") + " "
        "WHERE r.created >= ? AND r.created < ? "
        "GROUP BY r.ref ORDER BY brought DESC, r.ref LIMIT ?",
        (start, end, limit)).fetchall()


KINDS = {"traffic": traffic, "pages": pages, "referrers": referrers, "campaigns": campaigns,
         "funnels": funnel, "experiments": experiments, "loops": loops}


def visitor_text(raw):
    """A base table's vid (16 bytes) as the text the views show."""
    return uuid_text(raw)
