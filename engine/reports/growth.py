"""The growth reports: funnels and the referral loop.

``funnels``: ordered ``ename`` steps within a session. A session reaches
step 0 with its first event named steps[0], and step k with its first event
named steps[k] later (``created`` strictly greater) than the one that
reached step k-1; each step's conversion is given from the previous step and
from the first. One pass over the events of the steps in ``ev_visit`` order
(vid, sid, created), keeping one session's state at a time.

``loops``: a visitor's referral code is its vid, so a visitor who arrives
with ``ref`` = another visitor's vid was brought by that visitor. Per
referral code: the visitors it brought in the range (their first referral,
``first_refs``), how many of them converted (an event with an outcome, at
any time) and how many visitors those visitors brought in turn (at any
time). The viral coefficient K is the visitors brought by referred visitors
over the referred visitors (each referred visitor brings K more); a
referral's cycle time runs from the referrer's first event to the referred
visitor's first referral, and the median is over the referrals in the range
whose referrer is a stored visitor.
"""
import statistics

from engine.store.sinks.sqlite_model import uuid_bytes
from engine.reports.report import Report, rate

LIMIT = 50
_IN_CHUNK = 500          # host parameters per IN (...) list


def funnels(conn, start, end, steps):
    steps = list(steps)
    if not steps:
        raise ValueError("a funnel needs at least one step (ename)")
    rows, first, previous = [], None, None
    for step, sessions in zip(steps, funnel_counts(conn, start, end, steps)):
        first = sessions if first is None else first
        rows.append({"step": step, "sessions": sessions,
                     "from_previous": None if previous is None else rate(sessions, previous),
                     "from_first": rate(sessions, first)})
        previous = sessions
    return Report("funnels", ("step", "sessions", "from_previous", "from_first"), rows,
                  {"steps": steps})


def funnel_counts(conn, start, end, steps):
    """Sessions that reached each step, in step order."""
    position = {}
    for i, name in enumerate(steps):
        position.setdefault(name, []).append(i)   # a name may be several steps
    counts = [0] * len(steps)
    session, reached, last = None, 0, None
    sql = ("SELECT vid, sid, created, ename FROM ev INDEXED BY ev_visit "
           "WHERE ename IN (%s) AND created >= ? AND created < ? ORDER BY vid, sid, created"
           % ",".join("?" * len(position)))
    for vid, sid, created, ename in conn.execute(sql, (*position, start, end)):
        if (vid, sid) != session:
            session, reached, last = (vid, sid), 0, None
        if reached < len(steps) and reached in position[ename] and (
                last is None or created > last):
            counts[reached] += 1
            reached, last = reached + 1, created
    return counts


def loops(conn, start, end, limit=LIMIT):
    referred_by = _referrals_per_visitor(conn)
    converters = {vid for (vid,) in conn.execute(
        "SELECT DISTINCT vid FROM ev WHERE outcome IS NOT NULL")}
    per_ref, arrivals = {}, []
    brought = their = 0
    for vid, ref, created in conn.execute(
            "SELECT vid, ref, created FROM first_refs WHERE created >= ? AND created < ?",
            (start, end)):
        row = per_ref.get(ref)
        if row is None:
            row = per_ref[ref] = [0, 0, 0]
        onward = referred_by.get(vid, 0)
        row[0] += 1
        row[1] += vid in converters
        row[2] += onward
        brought += 1
        their += onward
        if len(ref) == 36:
            arrivals.append((ref, created))
    top = sorted(per_ref.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
    rows = [{"ref": ref, "brought": b, "converted": c, "referred": r, "k": rate(r, b)}
            for ref, (b, c, r) in top]
    cycles = cycle_times_ms(conn, arrivals)
    summary = {"referred_visitors": brought, "their_referrals": their, "k": rate(their, brought),
               "cycles": len(cycles),
               "median_cycle_seconds": statistics.median(cycles) / 1000 if cycles else None}
    return Report("loops", ("ref", "brought", "converted", "referred", "k"), rows, summary)


def _referrals_per_visitor(conn):
    """vid (16 bytes) -> visitors whose first referral named it, at any time."""
    found = {}
    for ref, n in conn.execute(
            "SELECT ref, count(*) FROM first_refs WHERE length(ref) = 36 GROUP BY ref"):
        vid = _vid(ref)
        if vid is not None:
            found[vid] = n
    return found


def _vid(text):
    try:
        raw = uuid_bytes(text)
    except ValueError:
        return None             # a 36-character code that is not a vid
    return raw if len(raw) == 16 else None


def cycle_times_ms(conn, arrivals):
    """Milliseconds from each referrer's first event to the arrival it
    referred, for (ref, arrival ms) pairs whose ref is a stored visitor."""
    pairs = [(vid, created) for vid, created in ((_vid(ref), c) for ref, c in arrivals)
             if vid is not None]
    first_seen = {}
    referrers = list({vid for vid, _ in pairs})
    for i in range(0, len(referrers), _IN_CHUNK):
        chunk = referrers[i:i + _IN_CHUNK]
        first_seen.update(conn.execute(
            "SELECT vid, min(created) FROM ev WHERE vid IN (%s) GROUP BY vid"
            % ",".join("?" * len(chunk)), chunk))
    return [created - first_seen[vid] for vid, created in pairs if vid in first_seen]
