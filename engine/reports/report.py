"""What every report kind returns: a ``Report`` (its columns, its rows as
dicts, and for some kinds a summary), printed by engine/reports/render.py
and drawn by the dashboard (engine/ingest/dashboard.py)."""
from dataclasses import dataclass, field


@dataclass
class Report:
    kind: str
    columns: tuple
    rows: list
    summary: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)     # warnings for the reader (stderr)

    def column(self, name):
        return [row[name] for row in self.rows]


def rate(part, whole):
    return part / whole if whole else None
