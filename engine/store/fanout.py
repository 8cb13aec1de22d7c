"""The data model's fan-out (DESIGN.md §3), the same for every store.

Which tables an event's fields land in, keyed how, and — for tables with one
row per key — which event the row keeps. Each sink turns these facts into its
own statements (engine/sinks/sqlite.py, engine/sinks/cassandra.py).
"""
EARLIEST, LATEST = "earliest", "latest"

# The visitor-profile fields visitors and sessions keep from their first event.
PROFILE = ("sid", "uid", "app", "ip", "latlon", "url", "last", "ref", "aff",
           "source", "medium", "campaign", "term", "country", "culture",
           "browser", "bhash", "device", "os", "tz", "vp", "params")

# (table, key, other columns besides created/eid, which event the row keeps)
ROW_TABLES = (
    ("visitors", ("vid",), PROFILE, EARLIEST),
    ("sessions", ("vid", "sid"), PROFILE, EARLIEST),
    ("nodes", ("vid", "ip"), ("sid", "uid"), LATEST),
    ("locations", ("vid", "latlon"), ("sid", "uid", "ip", "country"), LATEST),
    ("aliases", ("vid", "uid"), ("sid",), EARLIEST),
    ("users", ("uid", "vid"), ("sid",), EARLIEST),
    ("usernames", ("username", "vid"), ("uid", "sid"), EARLIEST),
    ("referrals", ("vid",), ("ref", "sid", "uid", "url", "last", "source", "medium",
                             "campaign"), EARLIEST),
    ("affiliates", ("vid",), ("aff", "sid", "uid", "url", "last"), LATEST),
)

# Counter tables and their keys (`total = total + n`).
COUNTER_TABLES = {
    "dailies": ("ip", "day"),
    "ips": ("ip",),
    "reqs": ("vid",),
    "hits": ("url",),
    "referrers": ("url",),
    "browsers": ("browser", "bhash"),
    "outcomes": ("outcome", "sink", "url", "created"),
    "counters": ("id",),
}
