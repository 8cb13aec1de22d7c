"""What the SQLite sink writes for a batch: the lean model of schema/sqlite.sql.

Per batch, inside the sink's transaction (``write(cur, batch, strings)``):

1. every event into ``ev`` with the next storage numbers ``n``, as
   ``ON CONFLICT (created, eid) DO NOTHING``; the numbers that landed
   (``n > `` the old maximum) say which events are new — a replayed event
   leaves a hole;
2. for the new events only: ``first_visits`` and ``first_refs`` (the
   earliest event by (created, eid) per visitor, an upsert that keeps the
   earlier row across batches) and the counters of engine/store/fanout.py,
   coalesced, as ``total = total + n``.

An event row costs one insert into ``ev`` and its two indexes; the other
tables of DESIGN.md §3 are views over ``ev`` (schema/sqlite.sql). Values are
converted once, by a plan per event shape (the event's keys in order), so an
event binds only the columns it carries.
"""
from operator import itemgetter

import orjson

from engine.event import COLUMNS
from engine.store.fanout import COUNTER_TABLES, fan_out

# Columns with a conversion of their own; every other event column is stored as is.
_UUIDS = ("eid", "vid", "sid")
_DICTIONARY = ("url", "last", "browser")       # strings.id in ev
_CONVERTED = frozenset(_UUIDS + _DICTIONARY + ("created", "first", "latlon", "vp", "params"))
PLAIN = tuple(c for c in COLUMNS if c not in _CONVERTED)
_PLAIN_SET = frozenset(PLAIN)
HEAD = ("n", "created", "eid", "vid", "sid", "first", "url", "last", "browser",
        "latlon", "vp", "params")

_fromhex = bytes.fromhex


def uuid_bytes(text):
    """Canonical UUID text -> its 16 bytes (the base tables' form); None
    stays None, for the NOT NULL constraint to refuse."""
    return None if text is None else _fromhex(text.replace("-", ""))


def uuid_text(raw):
    """16 bytes -> canonical lowercase UUID text."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def latlon_text(value):
    lat, lon = value
    return f"{float(lat)!r},{float(lon)!r}"


def vp_text(value):
    w, h = value
    return f"{int(w)}x{int(h)}"


class Strings:
    """The ``strings`` dictionary, with an in-memory cache of text -> id.

    Ids created inside a transaction are only cached for good when it
    commits (``committed``); a rollback forgets them (``rolled_back``), since
    the rows are gone. Another process writing the same file adds its own
    rows: a text is looked up before it is inserted, so ids stay unique."""
    MAX = 200_000      # cached texts; past that the cache starts over

    def __init__(self):
        self.ids = {}
        self.fresh = []

    def id(self, cur, text):
        i = self.ids.get(text)
        if i is None:
            row = cur.execute("SELECT id FROM strings WHERE text = ?", (text,)).fetchone()
            if row is None:
                cur.execute("INSERT INTO strings (text) VALUES (?)", (text,))
                i = cur.lastrowid
                self.fresh.append(text)
            else:
                i = row[0]
            if len(self.ids) >= self.MAX:
                self.ids.clear()
            self.ids[text] = i
        return i

    def committed(self):
        self.fresh.clear()

    def rolled_back(self):
        for text in self.fresh:
            self.ids.pop(text, None)
        self.fresh.clear()


def _insert_sql(plain):
    cols = HEAD + plain
    return ("INSERT INTO ev (%s) VALUES (%s) ON CONFLICT (created, eid) DO NOTHING"
            % (", ".join(cols), ", ".join("?" * len(cols))))


_PLANS = {}
_PLANS_MAX = 4096   # key orders come from clients (JSON bodies): bound the cache


def _plan(keys):
    """(getter of the plain columns, INSERT) for events with these keys."""
    plan = _PLANS.get(keys)
    if plan is None:
        plain = tuple(k for k in keys if k in _PLAIN_SET)
        if len(plain) > 1:
            getter = itemgetter(*plain)
        elif plain:
            key = plain[0]
            getter = lambda ev: (ev[key],)   # noqa: E731
        else:
            getter = lambda ev: ()           # noqa: E731
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        plan = _PLANS[keys] = (getter, _insert_sql(plain))
    return plan


def _ev_rows(cur, batch, base, strings):
    """{INSERT: [row, ...]} for the batch, numbered from base + 1, and
    {id(event): (n, vid bytes)}."""
    by_sql, numbers = {}, {}
    n = base
    sid_of = strings.id
    for ev in batch:
        n += 1
        get = ev.get
        vid = uuid_bytes(ev["vid"])
        numbers[id(ev)] = (n, vid)
        url, last, browser = get("url"), get("last"), get("browser")
        latlon, vp, params = get("latlon"), get("vp"), get("params")
        head = (n, ev["created"], uuid_bytes(ev["eid"]), vid, uuid_bytes(ev["sid"]),
                1 if ev["first"] else 0,
                sid_of(cur, url) if url else None,
                sid_of(cur, last) if last else None,
                sid_of(cur, browser) if browser else None,
                latlon_text(latlon) if latlon else None,
                vp_text(vp) if vp else None,
                orjson.dumps(params).decode() if params else None)
        getter, sql = _plan(tuple(ev))
        rows = by_sql.get(sql)
        if rows is None:
            rows = by_sql[sql] = []
        rows.append(head + getter(ev))
    return by_sql, numbers


# Earliest by (created, eid) across batches: a tie on created compares the
# events' eids (rare, so the subqueries seldom run).
FIRST_VISITS_SQL = (
    "INSERT INTO first_visits (vid, created, n) VALUES (?, ?, ?) "
    "ON CONFLICT (vid) DO UPDATE SET created = excluded.created, n = excluded.n "
    "WHERE excluded.created < first_visits.created "
    "OR (excluded.created = first_visits.created "
    "AND (SELECT eid FROM ev WHERE n = excluded.n) < "
    "(SELECT eid FROM ev WHERE n = first_visits.n))")
FIRST_REFS_SQL = (
    "INSERT INTO first_refs (vid, ref, created, n) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (vid) DO UPDATE SET ref = excluded.ref, created = excluded.created, "
    "n = excluded.n "
    "WHERE excluded.created < first_refs.created "
    "OR (excluded.created = first_refs.created "
    "AND (SELECT eid FROM ev WHERE n = excluded.n) < "
    "(SELECT eid FROM ev WHERE n = first_refs.n))")


def counter_sql(table, key):
    return (f"INSERT INTO {table} ({', '.join(key)}, total) "
            f"VALUES ({', '.join('?' * (len(key) + 1))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET total = total + excluded.total")


# reqs (events per visitor) is a view: ev's visit index counts it.
COUNTER_SQL = {t: counter_sql(t, k) for t, k in COUNTER_TABLES.items() if t != "reqs"}


def write(cur, batch, strings):
    """Store a fanout.Batch in the open transaction; return how many of its
    events were new (the others were stored already and are left alone)."""
    base = cur.execute("SELECT coalesce(max(n), 0) FROM ev").fetchone()[0]
    by_sql, numbers = _ev_rows(cur, batch, base, strings)
    for sql, rows in by_sql.items():
        cur.executemany(sql, rows)
    landed = len(batch)
    if cur.execute("SELECT count(*) FROM ev WHERE n > ?", (base,)).fetchone()[0] != landed:
        stored = {n for (n,) in cur.execute("SELECT n FROM ev WHERE n > ?", (base,))}
        batch = fan_out([ev for ev in batch if numbers[id(ev)][0] in stored])
        landed = len(batch)
        if not landed:
            return 0
    _write_rows(cur, batch, numbers)
    counters = batch.counters
    for table, sql in COUNTER_SQL.items():
        counts = counters[table]
        if counts:
            cur.executemany(sql, [k + (n,) for k, n in counts.items()])
    return landed


def firsts(batch):
    """({vid: earliest event with first}, {vid: earliest event with ref}):
    fanout's visitors and referrals winners (engine/store/fanout.py), the
    only row tables stored; the others are views."""
    visits, refs = {}, {}
    for ev in batch:
        vid, key = ev["vid"], (ev["created"], ev["eid"])
        if ev["first"]:
            old = visits.get(vid)
            if old is None or key < (old["created"], old["eid"]):
                visits[vid] = ev
        if ev.get("ref"):
            old = refs.get(vid)
            if old is None or key < (old["created"], old["eid"]):
                refs[vid] = ev
    return visits, refs


def _write_rows(cur, batch, numbers):
    visits, refs = firsts(batch)
    if visits:
        rows = []
        for ev in visits.values():
            n, vid = numbers[id(ev)]
            rows.append((vid, ev["created"], n))
        cur.executemany(FIRST_VISITS_SQL, rows)
    if refs:
        rows = []
        for ev in refs.values():
            n, vid = numbers[id(ev)]
            rows.append((vid, ev["ref"], ev["created"], n))
        cur.executemany(FIRST_REFS_SQL, rows)
