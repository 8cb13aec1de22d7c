"""The experiments report: exposures and conversions per experiment and split.

A visitor is exposed to experiment ``xid`` in split ``split`` by any event in
the range that carries both; its exposure time is the earliest such event.
It converts when an event of the same visitor with the same ``xid`` and an
``outcome`` (``outcome`` = the one asked for, if any) is later than that
(``created`` strictly greater: the collector stamps events in milliseconds,
and an outcome in the exposure's own millisecond is not counted) and before
the range's end. A visitor exposed to two splits of one experiment counts in
both.

Per split: visitors, converters, rate; against the control split (the first
in name order, or the one asked for): the relative uplift with its 95 % CI,
the two-sided p-value of the two-proportion z-test; per experiment, the
sample-ratio-mismatch p-value against an even split (engine/reports/stats.py).
"""
from engine.reports import stats
from engine.reports.report import Report, rate

COLUMNS = ("xid", "split", "visitors", "converters", "rate", "uplift", "ci_low", "ci_high",
           "p_value", "srm_p")

_SQL = (
    "WITH x AS (SELECT xid, split, vid, min(created) AS t FROM ev "
    "  WHERE xid IS NOT NULL AND split IS NOT NULL AND created >= :start AND created < :end "
    "  GROUP BY xid, split, vid) "
    "SELECT xid, split, count(*), sum(EXISTS ("
    "  SELECT 1 FROM ev o WHERE o.xid = x.xid AND o.vid = x.vid AND o.created > x.t "
    "  AND o.created < :end AND o.outcome IS NOT NULL {outcome})) "
    "FROM x GROUP BY xid, split ORDER BY xid, split")


def counts(conn, start, end, outcome=None):
    """[(xid, split, visitors, converters)] in xid, split order."""
    sql = _SQL.format(outcome="AND o.outcome = :outcome" if outcome is not None else "")
    return conn.execute(sql, {"start": start, "end": end, "outcome": outcome}).fetchall()


def report(conn, start, end, outcome=None, control=None):
    by_xid = {}
    for xid, split, visitors, converters in counts(conn, start, end, outcome):
        by_xid.setdefault(xid, []).append((split, visitors, converters))
    rows, notes = [], []
    for xid, splits in by_xid.items():
        rows.extend(_experiment(xid, splits, control, notes))
    return Report("experiments", COLUMNS, rows,
                  {"outcome": outcome, "control": control}, notes)


def _experiment(xid, splits, control, notes):
    names = [s for s, _, _ in splits]
    if control is None:
        base = splits[0]
    elif control in names:
        base = splits[names.index(control)]
    else:
        notes.append(f"experiment {xid}: no split {control!r} (has {', '.join(names)}); "
                     "no uplift computed")
        base = None
    srm = stats.srm_p(v for _, v, _ in splits)
    rows = []
    for split, visitors, converters in splits:
        row = {"xid": xid, "split": split, "visitors": visitors, "converters": converters,
               "rate": rate(converters, visitors), "uplift": None, "ci_low": None,
               "ci_high": None, "p_value": None, "srm_p": srm}
        if base is not None and split == base[0]:
            row["uplift"] = 0.0
        elif base is not None:
            _, n0, x0 = base
            row["uplift"], row["ci_low"], row["ci_high"] = stats.uplift_ci(
                x0, n0, converters, visitors)
            row["p_value"] = stats.two_proportion_p(x0, n0, converters, visitors)
        rows.append(row)
    return rows
