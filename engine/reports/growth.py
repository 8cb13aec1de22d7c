"""The growth reports: funnels and the referral loop.

``funnels``: ordered ``ename`` steps within a session (engine/store/queries.py
``funnel``: a session reaches step k with an event named steps[k] later than
its step k-1), with the conversion from the previous step and from the first.

``loops``: a visitor's referral code is its vid, so a visitor who arrives
with ``ref`` = another visitor's vid was brought by that visitor. Per
referral code: the visitors it brought in the range (their first referral),
how many of them converted (an event with an outcome), and how many visitors
those visitors brought in turn. The viral coefficient K is the visitors
brought by referred visitors over the referred visitors (each referred
visitor brings K more); the cycle time of a referral is from the referrer's
first event to the referred visitor's first referral; the median is over
the referrals in the range whose referrer is a stored visitor.
"""
import statistics

from engine.store import queries
from engine.store.sinks.sqlite_model import uuid_bytes
from engine.reports.report import Report, rate

LIMIT = 50
_IN_CHUNK = 500          # host parameters per IN (...) list


def funnels(conn, start, end, steps):
    if not steps:
        raise ValueError("a funnel needs at least one step (ename)")
    rows, first, previous = [], None, None
    for step, sessions in queries.funnel(conn, start, end, list(steps)):
        first = sessions if first is None else first
        rows.append({"step": step, "sessions": sessions,
                     "from_previous": None if previous is None else rate(sessions, previous),
                     "from_first": rate(sessions, first)})
        previous = sessions
    return Report("funnels", ("step", "sessions", "from_previous", "from_first"), rows,
                  {"steps": list(steps)})


def loops(conn, start, end, limit=LIMIT):
    columns = ("ref", "brought", "converted", "referred", "k")
    rows = [{"ref": ref, "brought": brought, "converted": converted, "referred": referred,
             "k": rate(referred, brought)}
            for ref, brought, converted, referred in queries.loops(conn, start, end, limit)]
    brought, referred = _totals(conn, start, end)
    cycles = cycle_times_ms(conn, start, end)
    summary = {"referred_visitors": brought, "their_referrals": referred,
               "k": rate(referred, brought), "cycles": len(cycles),
               "median_cycle_seconds": statistics.median(cycles) / 1000 if cycles else None}
    return Report("loops", columns, rows, summary)


def _totals(conn, start, end):
    """(visitors referred in the range, visitors they referred at any time)."""
    row = conn.execute(
        "WITH g AS (SELECT ref, count(*) AS n FROM first_refs GROUP BY ref) "
        "SELECT count(*), coalesce(sum(g.n), 0) FROM first_refs r "
        "LEFT JOIN g ON g.ref = " + queries.UUID_SQL.format("r.vid") + " "
        "WHERE r.created >= ? AND r.created < ?", (start, end)).fetchone()
    return row[0], row[1]


def cycle_times_ms(conn, start, end):
    """Milliseconds from each referrer's first event to its referred visitor's
    first referral, for the referrals in the range made by a stored visitor."""
    pairs = []
    for ref, created in conn.execute(
            "SELECT ref, created FROM first_refs WHERE created >= ? AND created < ? "
            "AND length(ref) = 36", (start, end)):
        try:
            pairs.append((uuid_bytes(ref), created))
        except ValueError:
            continue            # a 36-character code that is not a vid
    first_seen = {}
    referrers = list({vid for vid, _ in pairs})
    for i in range(0, len(referrers), _IN_CHUNK):
        chunk = referrers[i:i + _IN_CHUNK]
        first_seen.update(conn.execute(
            "SELECT vid, min(created) FROM ev WHERE vid IN (%s) GROUP BY vid"
            % ",".join("?" * len(chunk)), chunk))
    return [created - first_seen[vid] for vid, created in pairs if vid in first_seen]
