"""A Report as text (a terminal table), JSON or CSV.

JSON is a list of row objects with the Report's columns as keys; a kind with
a summary (traffic, funnels, loops, experiments) prints
``{"summary": {...}, "rows": [...]}`` instead, except experiments, whose
JSON is the list of rows alone (issue 20's contract). Numbers are
unrounded in JSON and CSV; the text table rounds them for reading, and
``format_cell`` is what the dashboard shows.
"""
import csv
import io

import orjson

PERCENT = {"rate", "uplift", "ci_low", "ci_high", "from_previous", "from_first"}
P_VALUES = {"p_value", "srm_p"}


def format_cell(column, value):
    if value is None:
        return ""
    if column in PERCENT:
        return f"{value * 100:.2f}%"
    if column in P_VALUES:
        return f"{value:.4g}"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def as_json(report):
    if report.kind == "experiments" or not report.summary:
        return orjson.dumps(report.rows, option=orjson.OPT_INDENT_2).decode()
    return orjson.dumps({"summary": report.summary, "rows": report.rows},
                        option=orjson.OPT_INDENT_2).decode()


def as_csv(report):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(["" if row[c] is None else row[c] for c in report.columns])
    return out.getvalue().rstrip("\n")


def as_text(report):
    if not report.rows:
        lines = [f"{report.kind}: nothing in this range"]
    else:
        cells = [[format_cell(c, row[c]) for c in report.columns] for row in report.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells))
                  for i, c in enumerate(report.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(report.columns, widths)).rstrip()]
        for r in cells:
            lines.append("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w)
                                   for v, w in zip(r, widths)).rstrip())
    for key, value in report.summary.items():
        if value is not None and not isinstance(value, list):
            lines.append(f"{key}: {format_cell(key, value)}")
    return "\n".join(lines)


def _numeric(text):
    return bool(text) and (text[0].isdigit() or text[0] == "-")
