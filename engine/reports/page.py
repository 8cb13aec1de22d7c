"""The dashboard page: every report kind as server-rendered HTML with inline
SVG charts (no script, no external resource), built from the same Reports
as ``tracker report`` and showing their figures as ``render.format_cell``
prints them.

Every figure is in an element with ``data-k="<kind>.<row key>.<column>"``
(e.g. ``experiments.x1.B.p_value``, ``loops.summary.k``), so a test (or a
scraper) can read the page's numbers back. Every text that came from events
(urls, referral codes, split names) is HTML-escaped.
"""
from html import escape

from engine.reports.render import format_cell

TOP = 10
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 8px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:14px 16px;
margin:0 0 16px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
.grid section{margin:0}
table{border-collapse:collapse;width:100%}th,td{padding:3px 8px;border-bottom:1px solid #eceff3;
text-align:left;white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}
th{font-weight:600;color:#5a6272}.figures{display:flex;gap:24px;margin:0 0 8px}
.figures div{font-size:22px;font-weight:600}.figures span{display:block;font-size:12px;
font-weight:400;color:#5a6272}form input{width:110px}form input[name=steps]{width:200px}
.muted{color:#5a6272}svg text{font:11px system-ui,sans-serif;fill:#1d2330}
"""
BAR = "#3b6fd8"
LINE = "#e0782e"


def page(reports, params, generated):
    """The whole HTML document. ``reports``: {kind: Report}; ``params``: the
    form's values (since, until, steps, outcome, control)."""
    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
             "<title>Tracker dashboard</title><style>", STYLE, "</style></head><body>",
             "<h1>Tracker</h1>", f"<p class=muted>generated {escape(generated)} UTC</p>",
             _form(params), _traffic(reports["traffic"]),
             _experiments(reports["experiments"])]
    if "funnels" in reports:
        parts.append(_funnel(reports["funnels"]))
    parts.append(_loops(reports["loops"]))
    parts.append("<div class=grid>")
    for kind, key in (("pages", "url"), ("referrers", "ref"), ("campaigns", None)):
        parts.append(_table_section(reports[kind], key))
    parts.append("</div></body></html>")
    return "".join(parts)


def _form(params):
    fields = [("since", "since (YYYY-MM-DD)"), ("until", "until"),
              ("steps", "funnel steps (a,b,c)"), ("outcome", "outcome"),
              ("control", "control split")]
    inputs = "".join(f"<label>{escape(label)} <input name={name} "
                     f"value=\"{escape(params.get(name) or '')}\"></label> "
                     for name, label in fields)
    return f"<section><form method=get action=\"\">{inputs}<button>show</button></form></section>"


def _cell(kind, key, column, value):
    text = escape(format_cell(column, value))
    numeric = not isinstance(value, str)
    return (f"<td{' class=n' if numeric else ''} "
            f"data-k=\"{escape(f'{kind}.{key}.{column}')}\">{text}</td>")


def _table(report, key_of, rows=None):
    rows = report.rows if rows is None else rows
    if not rows:
        return "<p class=muted>nothing in this range</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in report.columns)
    body = "".join("<tr>" + "".join(_cell(report.kind, key_of(i, row), c, row[c])
                                    for c in report.columns) + "</tr>"
                   for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures(kind, pairs):
    return "<div class=figures>" + "".join(
        f"<div><b data-k=\"{kind}.summary.{name}\">{escape(format_cell(name, value))}</b>"
        f"<span>{escape(label)}</span></div>" for name, label, value in pairs) + "</div>"


# ---------------------------------------------------------------- sections

def _traffic(report):
    figures = _figures("traffic", [("events", "events", report.summary["events"]),
                                   ("new_visitors", "new visitors",
                                    report.summary["new_visitors"])])
    chart = _day_chart(report.rows) if report.rows else ""
    return (f"<section><h2>Traffic</h2>{figures}{chart}"
            f"{_table(report, lambda i, r: r['day'], report.rows[-TOP:][::-1])}</section>")


def _day_chart(rows, width=900, height=160):
    """Events per day as bars, visitors per day as a line."""
    top = max(r["events"] for r in rows) or 1
    step = min(width / len(rows), 48.0)       # a few days do not become a wall of blue
    bars, points = [], []
    for i, r in enumerate(rows):
        h = (height - 20) * r["events"] / top
        x = i * step
        bars.append(f"<rect x=\"{x + step * 0.1:.1f}\" y=\"{height - 20 - h:.1f}\" "
                    f"width=\"{step * 0.8:.1f}\" height=\"{h:.1f}\" fill=\"{BAR}\">"
                    f"<title>{r['day']}: {r['events']:,} events</title></rect>")
        points.append(f"{x + step / 2:.1f},{height - 20 - (height - 20) * r['visitors'] / top:.1f}")
    labels = (f"<text x=\"0\" y=\"{height - 4}\">{rows[0]['day']}</text>"
              f"<text x=\"{width}\" y=\"{height - 4}\" text-anchor=end>{rows[-1]['day']}</text>")
    line = (f"<polyline fill=none stroke=\"{LINE}\" stroke-width=2 points=\"{' '.join(points)}\"/>"
            if len(points) > 1 else "")
    return (f"<svg role=img aria-label=\"events and visitors per day\" viewBox=\"0 0 {width} "
            f"{height}\" width=\"100%\" height=\"{height}\" preserveAspectRatio=none>"
            f"{''.join(bars)}{line}{labels}</svg>"
            f"<p class=muted><span style=\"color:{BAR}\">&#9632;</span> events &nbsp; "
            f"<span style=\"color:{LINE}\">&#9632;</span> visitors</p>")


def _experiments(report):
    if not report.rows:
        return "<section><h2>Experiments</h2><p class=muted>no exposures in this range</p></section>"
    by_xid = {}
    for row in report.rows:
        by_xid.setdefault(row["xid"], []).append(row)
    charts = "".join(_rate_bars(xid, rows) for xid, rows in by_xid.items())
    table = _table(report, lambda i, r: f"{r['xid']}.{r['split']}")
    return (f"<section><h2>Experiments</h2><p class=muted>uplift relative to the control "
            f"(first split, or the one asked for), 95 % CI, two-sided p of a two-proportion "
            f"z-test; SRM p: chi-square against an even split</p>{charts}{table}</section>")


def _rate_bars(xid, rows, width=520):
    top = max((r["rate"] or 0) for r in rows) or 1
    height = 22 * len(rows) + 8
    bars = []
    for i, r in enumerate(rows):
        y = 4 + 22 * i
        w = (width - 200) * (r["rate"] or 0) / top
        bars.append(f"<text x=\"0\" y=\"{y + 14}\">{escape(r['split'])}</text>"
                    f"<rect x=\"70\" y=\"{y}\" width=\"{w:.1f}\" height=\"16\" fill=\"{BAR}\"/>"
                    f"<text x=\"{76 + w:.1f}\" y=\"{y + 13}\">"
                    f"{escape(format_cell('rate', r['rate']))} of "
                    f"{r['visitors']:,}</text>")
    return (f"<h3>{escape(xid)}</h3><svg role=img aria-label=\"conversion rate per split\" "
            f"viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">"
            f"{''.join(bars)}</svg>")


def _funnel(report, width=640):
    rows = report.rows
    top = max((r["sessions"] for r in rows), default=0) or 1
    height = 26 * len(rows) + 8
    bars = []
    for i, r in enumerate(rows):
        y = 4 + 26 * i
        w = (width - 260) * r["sessions"] / top
        bars.append(f"<text x=\"0\" y=\"{y + 15}\">{escape(r['step'])}</text>"
                    f"<rect x=\"110\" y=\"{y}\" width=\"{w:.1f}\" height=\"20\" fill=\"{BAR}\"/>"
                    f"<text x=\"{116 + w:.1f}\" y=\"{y + 15}\">{r['sessions']:,} "
                    f"({escape(format_cell('from_first', r['from_first']))})</text>")
    chart = (f"<svg role=img aria-label=\"sessions per funnel step\" viewBox=\"0 0 {width} "
             f"{height}\" width=\"{width}\" height=\"{height}\">{''.join(bars)}</svg>")
    return (f"<section><h2>Funnel</h2>{chart}"
            f"{_table(report, lambda i, r: r['step'])}</section>")


def _loops(report):
    s = report.summary
    figures = _figures("loops", [
        ("k", "viral coefficient K", s["k"]),
        ("median_cycle_seconds", "median cycle (s)", s["median_cycle_seconds"]),
        ("referred_visitors", "referred visitors", s["referred_visitors"]),
        ("their_referrals", "their referrals", s["their_referrals"])])
    return (f"<section><h2>Referral loop</h2>{figures}"
            f"{_table(report, lambda i, r: r['ref'], report.rows[:TOP])}</section>")


def _table_section(report, key):
    title = report.kind.capitalize()
    return (f"<section><h2>{title}</h2>"
            f"{_table(report, lambda i, r: r[key] if key else i, report.rows[:TOP])}"
            "</section>")
