"""SQLiteSink on real SQLite files: fan-out, counters, first write wins,
idempotency by eid, schema version check, concurrent writer processes."""
import asyncio
import json
import multiprocessing
import sqlite3
import threading
import uuid

import pytest

from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.sqlite import SQLiteSink, iso_ms, open_db

T = 1764285326123            # 2025-11-27T23:15:26.123Z
T_ISO = "2025-11-27T23:15:26.123Z"
HOUR = 3_600_000

V1, S1 = "3d0be300-cbd2-11e8-aa59-ffd128a54d91", "3d0be301-cbd2-11e8-aa59-ffd128a54d91"
V2 = "9b2f7c1e-4a5d-4f0e-8c3b-2d6a1e9f0b7c"  # random v4 (browser-made)
S2 = "5e8d2a40-1c7b-4d93-a6f2-80b3c4d5e6f7"

ALL_TABLES = {"events", "visitors", "sessions", "nodes", "locations", "aliases",
              "users", "usernames", "referrals", "affiliates", "dailies", "ips",
              "reqs", "hits", "referrers", "browsers", "outcomes", "counters",
              "logs", "updates", "sequences"}
# DESIGN.md §3's row tables are views over the lean layout's base tables.
VIEWS = {"events", "visitors", "sessions", "nodes", "locations", "aliases", "users",
         "usernames", "referrals", "affiliates", "reqs"}
BASE = {"ev", "strings", "first_visits", "first_refs"}


class Cfg:
    schema_version = 1


def make_sink(path, version=1):
    cfg = Cfg()
    cfg.schema_version = version
    sink = SQLiteSink({"Service": "sqlite", "Path": str(path)}, cfg)
    sink.start_sync()
    return sink


def ev(**kw):
    """A minimal event as engine/event.py describes it, plus ``kw``."""
    # uuid4, not uuid1: libuuid's time state is copied into forked test
    # processes, which then mint the same uuid1 values now and then.
    e = {"eid": str(uuid.uuid4()), "vid": V1, "sid": S1, "created": T,
         "first": False, "ip": "127.0.0.1", "params": {}}
    e.update(kw)
    return e


def rows(path, sql, args=()):
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def dump(path):
    """Every row of every table, sorted: a whole-database snapshot."""
    return {t: sorted(rows(path, f"SELECT * FROM {t}"), key=repr) for t in sorted(ALL_TABLES)}


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "nested" / "dir" / "tracker.db")


@pytest.fixture(params=["compiled", "pure"])
def sink(db, request, monkeypatch):
    """A started sink with each batch writer: the compiled one and its
    pure-Python twin (TRACKER_PURE_SQLITE=1)."""
    if request.param == "pure":
        monkeypatch.setenv("TRACKER_PURE_SQLITE", "1")
    else:
        monkeypatch.delenv("TRACKER_PURE_SQLITE", raising=False)
    s = make_sink(db)
    yield s
    s.close_sync()


# ---------------------------------------------------------------- start-up

def test_start_creates_file_schema_and_version(db, sink):
    names = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == (ALL_TABLES - VIEWS) | BASE
    views = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type='view'")}
    assert views == VIEWS
    assert rows(db, "PRAGMA user_version") == [(2,)]
    assert rows(db, "SELECT name, seq FROM sequences") == [("DB_VER", 1)]
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    # a second sink (another worker) applies the schema again harmlessly
    other = make_sink(db)
    other.close_sync()
    assert rows(db, "SELECT name, seq FROM sequences") == [("DB_VER", 1)]


def test_open_db_settings(db, sink):
    conn = open_db(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: a commit survives a power cut
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
        assert conn.isolation_level is None
    finally:
        conn.close()


def test_schema_version_mismatch_raises(db, sink):
    sink.close_sync()
    with pytest.raises(SinkUnavailable) as info:
        make_sink(db, version=2)
    message = str(info.value)
    assert "version 1" in message and "SchemaVersion 2" in message
    assert rows(db, "SELECT seq FROM sequences WHERE name='DB_VER'") == [(1,)]


def test_unopenable_path_is_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SinkUnavailable):
        make_sink(blocker / "tracker.db")


def test_write_before_start_raises(db):
    s = SQLiteSink({"Service": "sqlite", "Path": db}, Cfg())
    with pytest.raises(SinkUnavailable):
        s.write_batch_sync([ev()])


# ---------------------------------------------------------------- fan-out

E1 = dict(eid="00000000-0000-1000-8000-000000000001", vid=V1, sid=S1, created=T,
          first=True, new_visitor=True, ip="127.0.0.1", params={"a": "b", "eid": "cw-a"},
          url="https://example.com/a", last="https://ref.example/x",
          latlon=[37.2, 6.3], vp=[1920, 1080], uid="admin", ref="andy", aff="partner",
          username="alice", browser="Mozilla/5.0", bhash="1xk9z", outcome="signup",
          sink="cw$", duration=34752, score=1.5, app="web", tz="America/Los_Angeles",
          country="US", culture="en-US", device="Linux", os="Linux",
          source="news", medium="email", campaign="fall", term="shoes",
          ptype="page", auth="tok", xid="x1", split="B", ename="click", etyp="ui",
          ver="3", targets="t1")
E2 = dict(eid="00000000-0000-1000-8000-000000000002", vid=V1, sid=S1, created=T + 1000,
          first=False, ip="127.0.0.1", params={}, url="https://example.com/a",
          last="https://example.com/a", browser="Mozilla/5.0", bhash="1xk9z")
E3 = dict(eid="00000000-0000-1000-8000-000000000003", vid=V2, sid=S2, created=T + HOUR,
          first=True, ip="10.0.0.2", params={"k": "v"}, url="https://example.com/b",
          latlon=["1.5", "-2.25"], outcome="signup", uid="bob")


def test_one_batch_writes_exactly_the_right_rows(db, sink):
    assert sink.write_batch_sync([E1, E2, E3]) == 3
    day1, day2 = "2025-11-27", "2025-11-28"
    t2, t3 = iso_ms(T + 1000), "2025-11-28T00:15:26.123Z"

    ev_rows = rows(db, "SELECT eid, vid, sid, created, first, latlon, vp, params, uid, url, "
                       "last, ip, duration, score, username, outcome, sink, ref, aff "
                       "FROM events ORDER BY eid")
    assert ev_rows == [
        (E1["eid"], V1, S1, T_ISO, 1, "37.2,6.3", "1920x1080", '{"a":"b","eid":"cw-a"}',
         "admin", "https://example.com/a", "https://ref.example/x", "127.0.0.1", 34752, 1.5,
         "alice", "signup", "cw$", "andy", "partner"),
        (E2["eid"], V1, S1, t2, 0, None, None, "{}", None, "https://example.com/a",
         "https://example.com/a", "127.0.0.1", None, None, None, None, None, None, None),
        (E3["eid"], V2, S2, t3, 1, "1.5,-2.25", None, '{"k":"v"}', "bob",
         "https://example.com/b", None, "10.0.0.2", None, None, None, "signup", None, None, None),
    ]
    # every event field has its column, and the text fields round-trip
    full = rows(db, "SELECT app, tz, country, culture, device, os, source, medium, campaign, "
                    "term, ptype, auth, xid, split, ename, etyp, ver, targets, browser, bhash "
                    "FROM events WHERE eid = ?", (E1["eid"],))
    assert full == [("web", "America/Los_Angeles", "US", "en-US", "Linux", "Linux", "news",
                     "email", "fall", "shoes", "page", "tok", "x1", "B", "click", "ui", "3",
                     "t1", "Mozilla/5.0", "1xk9z")]
    assert json.loads(rows(db, "SELECT params FROM events WHERE eid=?", (E1["eid"],))[0][0]) \
        == {"a": "b", "eid": "cw-a"}

    assert rows(db, "SELECT vid, created, eid, sid, uid, ip, url, ref, latlon, vp "
                    "FROM visitors ORDER BY vid") == [
        (V1, T_ISO, E1["eid"], S1, "admin", "127.0.0.1", "https://example.com/a", "andy",
         "37.2,6.3", "1920x1080"),
        (V2, t3, E3["eid"], S2, "bob", "10.0.0.2", "https://example.com/b", None,
         "1.5,-2.25", None),
    ]
    assert rows(db, "SELECT vid, sid, created, eid FROM sessions ORDER BY vid") == [
        (V1, S1, T_ISO, E1["eid"]), (V2, S2, t3, E3["eid"])]
    # nodes: one per (vid, ip), the latest sighting
    assert rows(db, "SELECT vid, ip, created, eid, sid FROM nodes ORDER BY vid") == [
        (V1, "127.0.0.1", t2, E2["eid"], S1), (V2, "10.0.0.2", t3, E3["eid"], S2)]
    assert rows(db, "SELECT vid, latlon, created, eid FROM locations ORDER BY vid") == [
        (V1, "37.2,6.3", T_ISO, E1["eid"]), (V2, "1.5,-2.25", t3, E3["eid"])]
    assert rows(db, "SELECT vid, uid, created FROM aliases ORDER BY vid") == [
        (V1, "admin", T_ISO), (V2, "bob", t3)]
    assert rows(db, "SELECT uid, vid, created FROM users ORDER BY uid") == [
        ("admin", V1, T_ISO), ("bob", V2, t3)]
    assert rows(db, "SELECT username, vid, uid, created FROM usernames") == [
        ("alice", V1, "admin", T_ISO)]
    assert rows(db, "SELECT vid, ref, created, eid, url FROM referrals") == [
        (V1, "andy", T_ISO, E1["eid"], "https://example.com/a")]
    assert rows(db, "SELECT vid, aff, created, eid FROM affiliates") == [
        (V1, "partner", T_ISO, E1["eid"])]

    assert rows(db, "SELECT ip, day, total FROM dailies ORDER BY ip") == [
        ("10.0.0.2", day2, 1), ("127.0.0.1", day1, 2)]
    assert rows(db, "SELECT ip, total FROM ips ORDER BY ip") == [
        ("10.0.0.2", 1), ("127.0.0.1", 2)]
    assert rows(db, "SELECT vid, total FROM reqs ORDER BY vid") == [(V1, 2), (V2, 1)]
    assert rows(db, "SELECT url, total FROM hits ORDER BY url") == [
        ("https://example.com/a", 2), ("https://example.com/b", 1)]
    assert rows(db, "SELECT url, total FROM referrers ORDER BY url") == [
        ("https://example.com/a", 1), ("https://ref.example/x", 1)]
    assert rows(db, "SELECT browser, bhash, total FROM browsers") == [
        ("Mozilla/5.0", "1xk9z", 2)]
    assert rows(db, "SELECT outcome, sink, url, created, total FROM outcomes ORDER BY created") == [
        ("signup", "cw$", "https://example.com/a", day1, 1),
        ("signup", "", "https://example.com/b", day2, 1)]
    assert rows(db, "SELECT id, total FROM counters") == [("vids_created", 1)]
    assert rows(db, "SELECT count(*) FROM logs") == [(0,)]
    assert rows(db, "SELECT count(*) FROM updates") == [(0,)]


def test_created_is_readable_iso_text():
    assert iso_ms(T) == T_ISO
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(T - 118) == "2025-11-27T23:15:26.005Z"


def test_sparse_event_writes_only_the_always_tables(db, sink):
    sink.write_batch_sync([ev()])
    counts = {t: rows(db, f"SELECT count(*) FROM {t}")[0][0] for t in ALL_TABLES}
    assert {t for t, n in counts.items() if n} == {
        "events", "nodes", "dailies", "ips", "reqs", "sequences"}


# ---------------------------------------------------------------- counters

def test_counters_coalesce_per_batch_and_add_across_batches(db, sink):
    url = "https://example.com/same"
    sink.write_batch_sync([ev(url=url), ev(url=url, vid=V2, sid=S2)])
    assert rows(db, "SELECT url, total FROM hits") == [(url, 2)]
    assert rows(db, "SELECT total FROM dailies") == [(2,)]
    sink.write_batch_sync([ev(url=url, new_visitor=True), ev(url="https://example.com/other")])
    assert rows(db, "SELECT url, total FROM hits ORDER BY url") == [
        ("https://example.com/other", 1), (url, 3)]
    assert rows(db, "SELECT vid, total FROM reqs ORDER BY vid") == [(V1, 3), (V2, 1)]
    assert rows(db, "SELECT ip, total FROM ips") == [("127.0.0.1", 4)]
    assert rows(db, "SELECT id, total FROM counters") == [("vids_created", 1)]


def test_one_statement_per_distinct_counter_key(db, monkeypatch):
    # The pure-Python twin, whose statements the sqlite3 module can trace (the
    # compiled writer's count: tests/unit/test_sqlite_write.py).
    monkeypatch.setenv("TRACKER_PURE_SQLITE", "1")
    sink = make_sink(db)
    seen = []
    conn = sink._conn
    conn.set_trace_callback(seen.append)
    try:
        sink.write_batch_sync([ev(url="https://example.com/x") for _ in range(50)])
    finally:
        conn.set_trace_callback(None)
    hits = [s for s in seen if s.startswith("INSERT INTO hits")]
    assert len(hits) == 1 and hits[0].rstrip().endswith("total + excluded.total")
    assert rows(db, "SELECT total FROM hits") == [(50,)]


# ---------------------------------------------------------------- first write wins

def test_first_write_wins_is_the_earliest_whatever_the_order(db, sink):
    late = ev(created=T + 5000, first=True, url="late", ref="late-ref", aff="late-aff")
    sink.write_batch_sync([late])
    assert rows(db, "SELECT url FROM visitors") == [("late",)]

    early = ev(created=T, first=True, url="early", ref="early-ref", aff="early-aff")
    sink.write_batch_sync([early])  # an earlier event arriving later replaces
    assert rows(db, "SELECT url, created, eid FROM visitors") == [("early", T_ISO, early["eid"])]
    assert rows(db, "SELECT url, eid FROM sessions") == [("early", early["eid"])]
    assert rows(db, "SELECT ref, eid FROM referrals") == [("early-ref", early["eid"])]

    later = ev(created=T + 9000, first=True, url="later", ref="later-ref", aff="later-aff")
    sink.write_batch_sync([later])  # a later one does not
    assert rows(db, "SELECT url FROM visitors") == [("early",)]
    assert rows(db, "SELECT url FROM sessions") == [("early",)]
    assert rows(db, "SELECT ref FROM referrals") == [("early-ref",)]
    # affiliates and nodes keep the latest instead (last touch / last seen)
    assert rows(db, "SELECT aff FROM affiliates") == [("later-aff",)]
    assert rows(db, "SELECT created FROM nodes") == [(iso_ms(T + 9000),)]


def test_first_write_wins_inside_one_batch(db, sink):
    early = ev(created=T, first=True, url="early", ref="early-ref")
    late = ev(created=T + 1, first=True, url="late", ref="late-ref")
    sink.write_batch_sync([late, early])
    assert rows(db, "SELECT url FROM visitors") == [("early",)]
    assert rows(db, "SELECT url FROM sessions") == [("early",)]
    assert rows(db, "SELECT ref FROM referrals") == [("early-ref",)]


def test_same_created_ties_break_by_eid_in_any_order(tmp_path):
    a = ev(eid="00000000-0000-1000-8000-00000000000a", first=True, url="a")
    b = ev(eid="00000000-0000-1000-8000-00000000000b", first=True, url="b")
    results = []
    for i, order in enumerate([([a], [b]), ([b], [a]), ([a, b],), ([b, a],)]):
        s = make_sink(tmp_path / f"{i}.db")
        for batch in order:
            s.write_batch_sync(batch)
        results.append(rows(s.path, "SELECT url FROM visitors"))
        s.close_sync()
    assert results == [[("a",)]] * 4


# ---------------------------------------------------------------- idempotency

def test_same_batch_twice_changes_nothing(db, sink):
    batch = [E1, E2, E3, ev(url="https://example.com/a")]
    assert sink.write_batch_sync(batch) == 4
    before = dump(db)
    assert sink.write_batch_sync(batch) == 0
    assert dump(db) == before  # events and counters alike: a replay is not re-counted
    assert rows(db, "SELECT total FROM hits WHERE url='https://example.com/a'") == [(3,)]


def test_partly_replayed_batch_counts_only_new_events(db, sink):
    a, b = ev(url="u"), ev(url="u")
    sink.write_batch_sync([a])
    assert sink.write_batch_sync([a, b]) == 1
    assert rows(db, "SELECT total FROM hits") == [(2,)]
    assert rows(db, "SELECT count(*) FROM events") == [(2,)]


def test_duplicate_eid_inside_a_batch_is_one_event(db, sink):
    a = ev(url="u")
    assert sink.write_batch_sync([a, dict(a)]) == 1
    assert rows(db, "SELECT total FROM hits") == [(1,)]


def test_failed_batch_rolls_back_whole_and_sink_keeps_working(db, sink):
    good = ev(url="good")
    bad = ev(vid=None)  # violates NOT NULL keys
    with pytest.raises(sqlite3.IntegrityError):
        sink.write_batch_sync([good, bad])
    assert rows(db, "SELECT count(*) FROM events") == [(0,)]
    assert rows(db, "SELECT count(*) FROM hits") == [(0,)]
    assert sink.write_batch_sync([good]) == 1  # the retried batch (without the culprit) lands
    assert rows(db, "SELECT url, total FROM hits") == [("good", 1)]


# ---------------------------------------------------------------- async interface

def test_async_interface_runs_in_the_sink_thread(db):
    threads = []

    async def main():
        s = SQLiteSink({"Service": "sqlite", "Path": db}, Cfg())
        await s.start()
        original = s.write_batch_sync

        def spy(events, hold=False):
            with open(f"/proc/self/task/{threading.get_native_id()}/comm") as fh:
                threads.append((threading.current_thread().name, fh.read().strip()))
            return original(events, hold)

        s.write_batch_sync = spy
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        n = await s.write_batch([ev(url="x") for _ in range(500)])
        t.cancel()
        await s.write_batch([])
        await s.close()
        return n, ticks

    n, ticks = asyncio.run(main())
    assert n == 500
    assert ticks > 0  # the loop kept running while the batch was written
    # the sink's own thread, named for the OS too (top -H, bench_http's CPU split)
    assert threads and threads[0][0].startswith("sqlite") and threads[0][1] == "sqlite"
    assert rows(db, "SELECT total FROM hits") == [(500,)]


# ---------------------------------------------------------------- many processes

N_BATCHES, BATCH = 12, 200


def _writer(path, worker, shared_vids):
    s = make_sink(path)
    try:
        for b in range(N_BATCHES):
            batch = [ev(vid=shared_vids[(b + i) % len(shared_vids)],
                        sid=shared_vids[(b + i) % len(shared_vids)],
                        first=(i % 7 == 0), url="https://example.com/shared",
                        created=T + b * 1000 + i, ip=f"10.0.{worker}.{i % 5}",
                        new_visitor=(i == 0))
                     for i in range(BATCH)]
            s.write_batch_sync(batch)
            if b == 0:
                s.write_batch_sync(batch)  # a replay: must not be counted twice
    finally:
        s.close_sync()


def test_two_processes_writing_one_file_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.db")
    vids = [str(uuid.uuid4()) for _ in range(30)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, vids)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    total = 2 * N_BATCHES * BATCH
    assert rows(path, "SELECT count(*), count(DISTINCT eid) FROM events") == [(total, total)]
    assert rows(path, "SELECT total FROM hits") == [(total,)]
    assert rows(path, "SELECT sum(total) FROM reqs") == [(total,)]
    assert rows(path, "SELECT sum(total) FROM dailies") == [(total,)]
    assert rows(path, "SELECT sum(total) FROM ips") == [(total,)]
    assert rows(path, "SELECT total FROM counters WHERE id='vids_created'") == [(2 * N_BATCHES,)]
    assert rows(path, "SELECT count(*) FROM visitors") == [(30,)]
    assert rows(path, "SELECT name, seq FROM sequences") == [("DB_VER", 1)]


def test_an_earlier_event_replaces_the_whole_row_even_with_fewer_fields(db, sink):
    """Rows are written with only the columns an event carries; the winning
    event must still replace every column (absent ones become NULL)."""
    later = ev(first=True, created=T + 5000, url="https://later", ref="late", uid="u1")
    sink.write_batch_sync([later])
    earlier = ev(first=True, created=T)
    sink.write_batch_sync([earlier])
    [row] = rows(db, "SELECT eid, url, ref, uid FROM visitors")
    assert row == (earlier["eid"], None, None, None)
    [row] = rows(db, "SELECT eid, url, uid FROM sessions")
    assert row == (earlier["eid"], None, None)
    [event] = rows(db, "SELECT url, ref FROM events WHERE eid = ?", (later["eid"],))
    assert event == ("https://later", "late")


def test_plan_cache_stays_bounded_whatever_the_key_orders(db, monkeypatch):
    from engine.store.sinks import sqlite_model as module
    monkeypatch.setenv("TRACKER_PURE_SQLITE", "1")     # the twin plans per key order
    sink = make_sink(db)
    monkeypatch.setattr(module, "_PLANS_MAX", 8)
    module._PLANS.clear()
    events = []
    for i, extra in enumerate(("url", "last", "ref", "aff", "app", "os", "device", "tz",
                               "term", "medium", "source", "campaign")):
        events.append({extra: "x%d" % i, **ev(created=T + i)})   # a new key order each time
    sink.write_batch_sync(events)
    assert 0 < len(module._PLANS) <= 8
    assert rows(db, "SELECT COUNT(*) FROM events") == [(12,)]
    assert rows(db, "SELECT url, tz, campaign FROM events WHERE url IS NOT NULL "
                    "OR tz IS NOT NULL OR campaign IS NOT NULL ORDER BY created") == [
        ("x0", None, None), (None, "x7", None), (None, None, "x11")]


def test_a_rolled_back_batch_forgets_the_texts_it_added(db, sink):
    """url / last / browser go through the strings dictionary; a batch that
    fails must not leave the sink's cache pointing at rows that are gone."""
    good = ev(url="https://only-here", browser="UA-new", last="https://from")
    with pytest.raises(sqlite3.IntegrityError):
        sink.write_batch_sync([good, ev(vid=None)])
    assert rows(db, "SELECT count(*) FROM strings") == [(0,)]
    assert sink.write_batch_sync([good]) == 1
    assert rows(db, "SELECT url, browser, last FROM events") == [
        ("https://only-here", "UA-new", "https://from")]
    # a text already stored is reused, not stored twice
    sink.write_batch_sync([ev(url="https://only-here")])
    assert rows(db, "SELECT count(*) FROM strings") == [(3,)]


def test_transactions_hold_20000_events_and_a_second_unless_the_entry_or_config_says(tmp_path):
    class Big:
        schema_version, batch_max_events, batch_max_age_ms = 1, 50000, 3000
    path = str(tmp_path / "t.db")
    default = SQLiteSink({"Service": "sqlite", "Path": path}, Cfg())
    assert (default.batch_max_events, default.batch_max_age_ms) == (20000, 1000)
    big = SQLiteSink({"Service": "sqlite", "Path": path}, Big())
    assert (big.batch_max_events, big.batch_max_age_ms) == (50000, 3000)
    class Quick:
        schema_version, batch_max_events, batch_max_age_ms = 1, 1000, 20
    assert SQLiteSink({"Service": "sqlite", "Path": path}, Quick()).batch_max_age_ms == 20
    from engine.config import config_from_dict
    assert SQLiteSink({"Service": "sqlite", "Path": path},
                      config_from_dict({})).batch_max_age_ms == 1000     # 250 is the default
    own = SQLiteSink({"Service": "sqlite", "Path": path, "BatchMaxEvents": 200,
                      "BatchMaxAgeMs": 50}, Big())
    assert (own.batch_max_events, own.batch_max_age_ms) == (200, 50)
    with pytest.raises(ValueError, match="BatchMaxEvents"):
        SQLiteSink({"Service": "sqlite", "Path": path, "BatchMaxEvents": "many"}, Cfg())
    with pytest.raises(ValueError, match="BatchMaxAgeMs.*milliseconds > 0"):
        SQLiteSink({"Service": "sqlite", "Path": path, "BatchMaxAgeMs": 0}, Cfg())


def test_events_are_stored_compactly(db, sink):
    """The lean layout's base row: UUIDs as 16 bytes, created in ms, the
    dictionary's ids for url / last / browser."""
    e = ev(url="https://example.com/a", browser="Mozilla/5.0")
    sink.write_batch_sync([e])
    [(eid, created, url, browser)] = rows(db, "SELECT eid, created, url, browser FROM ev")
    assert eid == bytes.fromhex(e["eid"].replace("-", "")) and created == T
    assert (url, browser) == (1, 2)


# ---------------------------------------------------------------- held batches (one transaction)

def test_held_batches_are_invisible_until_their_commit_then_land_together(db, sink):
    first = [ev(url="a"), ev(url="b", vid=V2)]
    second = [ev(url="a"), ev(url="c", browser="UA-held")]
    assert sink.write_batch_sync(first, hold=True) == 2
    assert sink.write_batch_sync(second, hold=True) == 2
    assert rows(db, "SELECT count(*) FROM ev") == [(0,)]       # another connection's view
    sink.commit_sync()
    assert rows(db, "SELECT url, total FROM hits ORDER BY url") == [("a", 2), ("b", 1), ("c", 1)]
    assert rows(db, "SELECT count(*) FROM events") == [(4,)]
    sink.commit_sync()                                           # nothing open: nothing done
    assert sink.write_batch_sync([ev(url="d")]) == 1             # unheld: committed at once
    assert rows(db, "SELECT count(*) FROM events") == [(5,)]


def test_a_failed_batch_rolls_back_the_batches_held_before_it(db, sink):
    held = [ev(url="https://held", browser="UA-held")]
    sink.write_batch_sync(held, hold=True)
    with pytest.raises(sqlite3.IntegrityError):
        sink.write_batch_sync([ev(url="x"), ev(vid=None)])
    assert rows(db, "SELECT count(*) FROM ev") == [(0,)]
    assert rows(db, "SELECT count(*) FROM strings") == [(0,)]   # nor the texts it added
    # written again (as the channel does), held then committed: each row once
    assert sink.write_batch_sync(held, hold=True) == 1
    assert sink.write_batch_sync([ev(url="x")]) == 1
    assert rows(db, "SELECT url, browser FROM events ORDER BY url") == [
        ("https://held", "UA-held"), ("x", None)]
    assert rows(db, "SELECT count(*) FROM strings") == [(3,)]
    assert rows(db, "SELECT url, total FROM hits ORDER BY url") == [("https://held", 1), ("x", 1)]


def test_closing_with_batches_held_rolls_them_back(db, sink):
    sink.write_batch_sync([ev(url="held", browser="UA-gone")], hold=True)
    sink.close_sync()
    assert rows(db, "SELECT count(*) FROM ev") == [(0,)]
    sink.start_sync()
    assert sink.write_batch_sync([ev(url="again", browser="UA-gone")]) == 1
    assert rows(db, "SELECT url, browser FROM events") == [("again", "UA-gone")]


def test_transactions_span_100000_events_and_5_s_unless_the_entry_says(tmp_path):
    path = str(tmp_path / "t.db")
    default = SQLiteSink({"Service": "sqlite", "Path": path}, Cfg())
    assert (default.spans, default.span_events, default.span_age_ms) == (True, 100000, 5000)
    own = SQLiteSink({"Service": "sqlite", "Path": path, "TransactionMaxEvents": 20000,
                      "TransactionMaxAgeMs": 200}, Cfg())
    assert (own.span_events, own.span_age_ms) == (20000, 200)
    with pytest.raises(ValueError, match="TransactionMaxEvents.*events > 0"):
        SQLiteSink({"Service": "sqlite", "Path": path, "TransactionMaxEvents": 0}, Cfg())
    with pytest.raises(ValueError, match="TransactionMaxAgeMs"):
        SQLiteSink({"Service": "sqlite", "Path": path, "TransactionMaxAgeMs": "1s"}, Cfg())
