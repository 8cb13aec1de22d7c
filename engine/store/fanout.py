"""The data model's fan-out (DESIGN.md §3): written once, used by every sink.

``fan_out(events)`` turns a batch of events into a ``Batch``: the events
themselves (unique by eid, in spool order), the rows each row table gets
(one winning event per key) and the counter increments per table and key.
SQLite, Cassandra and any plug-in sink (entry point ``tracker.sinks``) store
exactly this; a sink only converts values and writes.

Winner order: among events with the same key, a row keeps the EARLIEST or
the LATEST by ``(created, eid)`` — created in ms, then the eid's canonical
text (for the time-based eids the server assigns, the text of two eids of
the same millisecond orders as their clock does, since the low time bits
lead the text). SQLite applies the same order across batches in its upsert;
Cassandra across batches by write timestamps derived from created and the
eid's clock (engine/store/sinks/cassandra.py), which agree with it except for
two events of one 10 µs slot on different workers.

Keys are tuples, in the key column order below; a missing ``ip`` is "" (so
``nodes`` and ``dailies`` always have a key); ``latlon`` is a (lat, lon)
tuple. Counter keys use the UTC day of ``created`` as text ("YYYY-MM-DD").
Values are the decoded event's (engine/record.py); converting them to a
store's types is the sink's business.
"""
import time

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
ROW_TABLE_NAMES = tuple(t[0] for t in ROW_TABLES)

# Counter tables and their keys (`total = total + n`). referrers' key column
# is named url and holds the event's `last`; outcomes' created is the day.
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

_days = {}


def utc_day(created_ms):
    """"YYYY-MM-DD" of a ``created`` in ms (UTC)."""
    number = created_ms // 86_400_000
    text = _days.get(number)
    if text is None:
        if len(_days) > 64:
            _days.clear()
        text = _days[number] = time.strftime("%Y-%m-%d", time.gmtime(number * 86_400))
    return text


class Batch(list):
    """The events of a batch (a list, so a sink written for a plain list of
    events keeps working) and their fan-out, each part computed on first use:
    ``rows`` {table: {key: winning event}} and ``counters`` {table: {key: n}}."""
    __slots__ = ("_rows", "_counters")

    def __init__(self, events=()):
        super().__init__(events)
        self._rows = None
        self._counters = None

    @property
    def rows(self):
        if self._rows is None:
            self._rows = _fan_rows(self)
        return self._rows

    @property
    def counters(self):
        if self._counters is None:
            self._counters = _fan_counts(self)
        return self._counters


def unique(events):
    """The events with an eid not seen earlier in the list, in order."""
    seen, out = set(), []
    add, keep = seen.add, out.append
    for ev in events:
        eid = ev["eid"]
        if eid not in seen:
            add(eid)
            keep(ev)
    return out


def fan_out(events):
    """The Batch of ``events``: duplicates (same eid) dropped, fan-out ready."""
    if isinstance(events, Batch):
        return events
    return Batch(unique(events))


def _earliest(table, key, ev):
    old = table.get(key)
    if old is None or (ev["created"], ev["eid"]) < (old["created"], old["eid"]):
        table[key] = ev


def _latest(table, key, ev):
    old = table.get(key)
    if old is None or (ev["created"], ev["eid"]) > (old["created"], old["eid"]):
        table[key] = ev


def _bump(table, key):
    table[key] = table.get(key, 0) + 1


def _fan_rows(events):
    rows = {name: {} for name in ROW_TABLE_NAMES}
    visitors, sessions, nodes, locations = (rows["visitors"], rows["sessions"],
                                            rows["nodes"], rows["locations"])
    for ev in events:
        vid, get = ev["vid"], ev.get
        if ev["first"]:
            _earliest(visitors, (vid,), ev)
            _earliest(sessions, (vid, ev["sid"]), ev)
        _latest(nodes, (vid, get("ip") or ""), ev)
        latlon = get("latlon")
        if latlon:
            _latest(locations, (vid, tuple(latlon)), ev)
        uid = get("uid")
        if uid:
            _earliest(rows["aliases"], (vid, uid), ev)
            _earliest(rows["users"], (uid, vid), ev)
        username = get("username")
        if username:
            _earliest(rows["usernames"], (username, vid), ev)
        if get("ref"):
            _earliest(rows["referrals"], (vid,), ev)
        if get("aff"):
            _latest(rows["affiliates"], (vid,), ev)
    return rows


def _fan_counts(events):
    counts = {name: {} for name in COUNTER_TABLES}
    dailies, ips, reqs, hits = counts["dailies"], counts["ips"], counts["reqs"], counts["hits"]
    referrers, browsers = counts["referrers"], counts["browsers"]
    for ev in events:
        get = ev.get
        ip = get("ip") or ""
        day = utc_day(ev["created"])
        _bump(dailies, (ip, day))
        if ip:
            _bump(ips, (ip,))
        _bump(reqs, (ev["vid"],))
        url = get("url")
        if url:
            _bump(hits, (url,))
        last = get("last")
        if last:
            _bump(referrers, (last,))
        browser = get("browser")
        if browser:
            _bump(browsers, (browser, get("bhash") or ""))
        outcome = get("outcome")
        if outcome:
            _bump(counts["outcomes"], (outcome, get("sink") or "", url or "", day))
        if get("new_visitor"):
            _bump(counts["counters"], ("vids_created",))
    return counts
