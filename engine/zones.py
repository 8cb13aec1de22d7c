"""IANA zone name -> ISO 3166 country code, from the tzdata ``zone1970.tab``.

The event's ``country`` column is derived from the client's ``tz`` (an IANA
zone name such as ``America/Los_Angeles``). ``zone1970.tab`` lists, for each
zone, the countries it covers; the first code on the line is the country of
the zone's principal location (the table's own rule: "that country is listed
first in column 1"), so that is the one we keep::

    CH,DE,LI  +4723+00832  Europe/Zurich   ->  ZONES["Europe/Zurich"] == "CH"

Only the canonical names in that table are known; backward-compatible links
(``US/Pacific``) are not, and give no country.

The table ships with the ``tzdata`` package, so the result does not depend on
the host's ``/usr/share/zoneinfo``. Both parser implementations import
``ZONES`` from here, so they always agree.
"""

from importlib import resources

__all__ = ["ZONES", "load_zones", "parse_zone_table"]


def parse_zone_table(text: str) -> dict[str, str]:
    """Parse the text of a zone1970.tab-style table into {zone: country}."""
    zones: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) < 3:
            continue
        countries, zone = columns[0].strip(), columns[2].strip()
        if not countries or not zone:
            continue
        zones[zone] = countries.split(",")[0].strip()
    return zones


def load_zones() -> dict[str, str]:
    """Read zone1970.tab from the installed tzdata package."""
    table = resources.files("tzdata.zoneinfo") / "zone1970.tab"
    return parse_zone_table(table.read_text(encoding="utf-8"))


ZONES: dict[str, str] = load_zones()
"""Loaded once at import; treat as read-only."""
