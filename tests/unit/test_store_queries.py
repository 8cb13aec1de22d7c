"""engine/store/queries.py (each report kind's SQL) and the lean layout's
views, on a real SQLite file written by the sink from a corpus whose answers
are worked out by hand."""
import sqlite3

import pytest

from engine.store import queries, stats
from engine.store.sinks.sqlite import SQLiteSink, open_db

T = 1764288000000            # 2025-11-28T00:00:00.000Z
DAY = 86_400_000
V = ["%08x-0000-4000-8000-000000000000" % i for i in range(1, 8)]


class Cfg:
    schema_version = 1


def ev(n, vid, created, sid=None, **kw):
    e = {"eid": "%08x-0000-1000-8000-000000000000" % n, "vid": vid, "sid": sid or vid,
         "created": created, "first": True, "ip": "127.0.0.1", "params": {}}
    e.update(kw)
    return e


CORPUS = [
    # day 1. V0: campaign visitor, full funnel in one session, converts; in experiment x1/A
    ev(1, V[0], T, url="https://s/home", ename="view", source="news", medium="email",
       campaign="fall", xid="x1", split="A", ref="r1"),
    ev(2, V[0], T + 10, url="https://s/cart", ename="cart", first=False),
    ev(3, V[0], T + 20, url="https://s/buy", ename="buy", first=False, outcome="purchase",
       xid="x1"),
    # V1: views, then buys BEFORE the cart in a second session: the funnel stops at view
    ev(4, V[1], T + 100, url="https://s/home", ename="view", xid="x1", split="B", ref="r1"),
    ev(5, V[1], T + 90, url="https://s/buy", ename="buy", first=False, sid=V[2]),
    # V2: referred by V0 (its code is V0's vid); carts after viewing
    ev(6, V[2], T + 200, url="https://s/home", ename="view", ref=V[0], uid="u2"),
    ev(7, V[2], T + 210, url="https://s/cart", ename="cart", first=False),
    # day 2. V3: referred by V2, converts; V4 plain visitor, two pages
    ev(8, V[3], T + DAY, url="https://s/home", ename="view", ref=V[2], outcome="signup"),
    ev(9, V[4], T + DAY + 5, url="https://s/home", ename="view", latlon=[1.5, 2.5]),
    ev(10, V[4], T + DAY + 6, url="https://s/about", ename="view", first=False,
       aff="partner", username="nick"),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("q") / "tracker.db")
    sink = SQLiteSink({"Service": "sqlite", "Path": path}, Cfg())
    sink.start_sync()
    sink.write_batch_sync(CORPUS[:5])
    sink.write_batch_sync(CORPUS[5:])
    sink.close_sync()
    conn = open_db(path, readonly=True)
    yield conn
    conn.close()


ALL = (T - DAY, T + 3 * DAY)


def test_traffic(db):
    assert queries.traffic(db, *ALL) == [
        ("2025-11-28", 7, 3, 4, 3),      # V0 V1 V2; sessions V0 V1 V1/V2 V2; first visits
        ("2025-11-29", 3, 2, 2, 2)]
    assert queries.traffic(db, T + DAY, T + 2 * DAY) == [("2025-11-29", 3, 2, 2, 2)]


def test_pages(db):
    assert queries.pages(db, *ALL) == [
        ("https://s/home", 5, 5), ("https://s/buy", 2, 2), ("https://s/cart", 2, 2),
        ("https://s/about", 1, 1)]
    assert queries.pages(db, *ALL, limit=1) == [("https://s/home", 5, 5)]


def test_referrers(db):
    assert queries.referrers(db, *ALL) == [("r1", 2, 5), (V[0], 1, 2), (V[2], 1, 1)]


def test_campaigns(db):
    assert queries.campaigns(db, *ALL) == [("news", "email", "fall", 1, 1)]


def test_funnels(db):
    assert queries.funnel(db, *ALL, ("view", "cart", "buy")) == [
        ("view", 5), ("cart", 2), ("buy", 1)]
    assert queries.funnel(db, *ALL, ()) == []


def test_experiments(db):
    assert queries.experiments(db, *ALL) == [("x1", "A", 1, 1), ("x1", "B", 1, 0)]


def test_loops(db):
    # r1 brought V0 and V1 (V0 converted; V0 referred V2) ; V0 brought V2, who
    # referred V3 ; V2 brought V3, who converted
    assert queries.loops(db, *ALL) == [("r1", 2, 1, 1), (V[0], 1, 0, 1), (V[2], 1, 1, 0)]


def test_every_kind_is_listed():
    assert set(queries.KINDS) == {"traffic", "pages", "referrers", "campaigns", "funnels",
                                  "experiments", "loops"}


def test_stats_counts_are_the_views_counts(db):
    for table, sql in stats.COUNTS.items():
        counted = db.execute(sql).fetchone()[0]
        assert counted == db.execute(f"SELECT count(*) FROM {table}").fetchone()[0], table
        assert counted, table                            # the corpus fills every view


def test_views_show_wave1_values(db):
    row = db.execute("SELECT eid, vid, created, url, params, first FROM events "
                     "WHERE eid LIKE '00000001-%'").fetchone()
    assert row == ("00000001-0000-1000-8000-000000000000", V[0], "2025-11-28T00:00:00.000Z",
                   "https://s/home", "{}", 1)
    # V1's second session has no first event: no sessions row (its events count in traffic)
    assert db.execute("SELECT vid, sid FROM sessions WHERE sid = ?", (V[2],)).fetchall() == [
        (V[2], V[2])]
    assert db.execute("SELECT vid, latlon, ip FROM locations").fetchall() == [
        (V[4], "1.5,2.5", "127.0.0.1")]
    assert db.execute("SELECT username, vid FROM usernames").fetchall() == [("nick", V[4])]
    assert db.execute("SELECT vid, aff FROM affiliates").fetchall() == [(V[4], "partner")]
    assert db.execute("SELECT uid, vid FROM users").fetchall() == [("u2", V[2])]
    assert db.execute("SELECT total FROM reqs WHERE vid = ?", (V[4],)).fetchall() == [(2,)]


def test_readers_are_read_only(db):
    with pytest.raises(sqlite3.OperationalError):
        db.execute("DELETE FROM ev")
