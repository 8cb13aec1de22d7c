"""The audience reports: traffic per day, pages, referrers and campaigns.

Their SQL is engine/store/queries.py's (the lean SQLite layout); this module
names the columns and adds the rates.
"""
from engine.store import queries
from engine.reports.report import Report, rate

LIMIT = 50


def traffic(conn, start, end):
    columns = ("day", "events", "visitors", "sessions", "new_visitors")
    rows = [dict(zip(columns, r)) for r in queries.traffic(conn, start, end)]
    rows.sort(key=lambda r: r["day"])
    return Report("traffic", columns, rows, {
        "events": sum(r["events"] for r in rows),
        "new_visitors": sum(r["new_visitors"] for r in rows)})


def pages(conn, start, end, limit=LIMIT):
    columns = ("url", "events", "visitors")
    return Report("pages", columns,
                  [dict(zip(columns, r)) for r in queries.pages(conn, start, end, limit)])


def referrers(conn, start, end, limit=LIMIT):
    """Referral codes (``ref``) by the visitors whose first referral they were."""
    columns = ("ref", "visitors", "events")
    return Report("referrers", columns,
                  [dict(zip(columns, r)) for r in queries.referrers(conn, start, end, limit)])


def campaigns(conn, start, end, limit=LIMIT):
    """First-touch UTM campaigns and the visitors they brought who converted."""
    columns = ("source", "medium", "campaign", "visitors", "converters", "rate")
    rows = []
    for source, medium, campaign, visitors, converters in queries.campaigns(
            conn, start, end, limit):
        rows.append({"source": source, "medium": medium, "campaign": campaign,
                     "visitors": visitors, "converters": converters,
                     "rate": rate(converters, visitors)})
    return Report("campaigns", columns, rows)
