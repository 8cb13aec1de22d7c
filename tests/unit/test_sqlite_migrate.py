"""A wave-1 SQLite store (tests/fixtures/wave1_store.sql, written by the
wave-1 sink) opened by this version: migrated to the lean layout in one
transaction, every table of DESIGN.md §3 reads the same rows afterwards, and
the store goes on exactly (replays skipped, counters continued)."""
import os
import sqlite3

import pytest

from engine.store import stats
from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.sqlite import SQLiteSink
from engine.store.sinks.sqlite_migrate import iso_to_ms

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "wave1_store.sql")
DESIGN_TABLES = ("events", "visitors", "sessions", "nodes", "locations", "aliases", "users",
                 "usernames", "referrals", "affiliates", "dailies", "ips", "reqs", "hits",
                 "referrers", "browsers", "outcomes", "counters", "logs", "updates", "sequences")


class Cfg:
    schema_version = 1


def rows(path, sql, args=()):
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def dump(path):
    return {t: sorted(rows(path, f"SELECT * FROM {t}"), key=repr) for t in DESIGN_TABLES}


@pytest.fixture
def wave1(tmp_path):
    path = str(tmp_path / "tracker.db")
    conn = sqlite3.connect(path)
    with open(FIXTURE) as fh:
        conn.executescript(fh.read())
    conn.close()
    return path


def open_sink(path, version=1):
    cfg = Cfg()
    cfg.schema_version = version
    sink = SQLiteSink({"Service": "sqlite", "Path": path}, cfg)
    sink.start_sync()
    return sink


def test_wave1_fixture_is_the_old_layout(wave1):
    kinds = dict(rows(wave1, "SELECT name, type FROM sqlite_master WHERE name = 'events'"))
    assert kinds == {"events": "table"}
    assert rows(wave1, "SELECT count(*) FROM events") == [(122,)]
    assert rows(wave1, "PRAGMA user_version") == [(0,)]


def test_migration_keeps_every_design_table_row_for_row(wave1):
    before = dump(wave1)
    assert all(before[t] for t in ("events", "visitors", "sessions", "nodes", "locations",
                                   "aliases", "usernames", "referrals", "affiliates", "reqs",
                                   "outcomes", "counters"))
    sink = open_sink(wave1)
    sink.close_sync()
    assert dump(wave1) == before
    kinds = dict(rows(wave1, "SELECT name, type FROM sqlite_master "
                             "WHERE name IN ('events', 'visitors', 'ev', 'w1_events')"))
    assert kinds == {"events": "view", "visitors": "view", "ev": "table"}
    assert rows(wave1, "PRAGMA user_version") == [(2,)]
    # the tie on created was won by the smaller eid, and still is
    assert rows(wave1, "SELECT ref, eid FROM referrals WHERE ref LIKE 'tie-%'") == [
        ("tie-a", "00000000-0000-1000-8000-00000000000a")]


def test_migrated_store_goes_on_exactly(wave1):
    sink = open_sink(wave1)
    [(eid, vid, sid, created, url)] = rows(
        wave1, "SELECT eid, vid, sid, created, url FROM events WHERE url IS NOT NULL "
               "ORDER BY created LIMIT 1")
    hits_before = rows(wave1, "SELECT total FROM hits WHERE url = ?", (url,))[0][0]
    replay = {"eid": eid, "vid": vid, "sid": sid, "created": iso_to_ms(created),
              "first": False, "ip": "10.0.0.1", "params": {}, "url": url}
    assert sink.write_batch_sync([replay]) == 0          # stored in wave 1: skipped
    fresh = dict(replay, eid="11111111-0000-1000-8000-000000000001")
    assert sink.write_batch_sync([fresh, replay]) == 1
    sink.close_sync()
    assert rows(wave1, "SELECT total FROM hits WHERE url = ?", (url,)) == [(hits_before + 1,)]
    assert rows(wave1, "SELECT count(*) FROM events") == [(123,)]
    assert rows(wave1, "SELECT total FROM reqs WHERE vid = ?", (vid,))[0][0] == \
        rows(wave1, "SELECT count(*) FROM events WHERE vid = ?", (vid,))[0][0]
    assert rows(wave1, "SELECT id, total FROM counters ORDER BY id") == [
        ("bus.count", 3), ("vids_created", 60)]


def test_stats_reads_a_wave1_store_and_its_migration_alike(wave1):
    old = stats.collect(wave1)
    open_sink(wave1).close_sync()
    new = stats.collect(wave1)
    assert old["tables"] == new["tables"]
    assert old["tables"]["events"] == 122 and old["tables"]["visitors"] == 10
    for key in ("top_urls", "top_referrers", "counters", "schema_version"):
        assert old[key] == new[key]


def test_a_failed_migration_leaves_the_wave1_store_untouched(wave1):
    before = dump(wave1)
    conn = sqlite3.connect(wave1)
    conn.execute("UPDATE events SET created = 'not a time' WHERE rowid = 5")
    conn.commit()
    conn.close()
    with pytest.raises(SinkUnavailable) as info:
        open_sink(wave1)
    assert "cannot prepare" in str(info.value)
    kinds = dict(rows(wave1, "SELECT name, type FROM sqlite_master WHERE name = 'events'"))
    assert kinds == {"events": "table"}                  # rolled back whole
    after = dump(wave1)
    assert {t: v for t, v in after.items() if t != "events"} == \
        {t: v for t, v in before.items() if t != "events"}


def test_iso_to_ms_reads_what_wave1_wrote():
    assert iso_to_ms("2025-11-27T23:15:26.123Z") == 1764285326123
    assert iso_to_ms("1970-01-01T00:00:00.000Z") == 0
