"""The compiled SQLite batch writer (engine/store/sinks/_sqlite_write.pyx) against
its pure-Python twin (sqlite_model.write, ``TRACKER_PURE_SQLITE=1``): the same
batches into two real files must leave the same rows, counters and answers —
replays, ties on ``created``, robots' flags and odd values included."""
import sqlite3
import tempfile
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.store.sinks.sqlite import SQLiteSink

VIDS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(6)]
SIDS = [str(uuid.UUID(int=i * 104729 + 3)) for i in range(4)]
T = 1764285326123


class Cfg:
    schema_version = 1


def make_sink(path, monkeypatch, pure):
    if pure:
        monkeypatch.setenv("TRACKER_PURE_SQLITE", "1")
    else:
        monkeypatch.delenv("TRACKER_PURE_SQLITE", raising=False)
    sink = SQLiteSink({"Service": "sqlite", "Path": str(path)}, Cfg())
    sink.start_sync()
    assert (type(sink._writer).__name__ == "TwinWriter") == pure
    return sink


# Everything a reader can see: the views resolve the strings dictionary, so
# the two writers may number its texts differently.
DUMPS = [
    "SELECT * FROM events ORDER BY created, eid",
    "SELECT * FROM visitors ORDER BY vid",
    "SELECT * FROM referrals ORDER BY vid",
    "SELECT * FROM reqs ORDER BY vid",
    "SELECT vid, created, n FROM first_visits ORDER BY vid",
    "SELECT vid, ref, created, n FROM first_refs ORDER BY vid",
    "SELECT * FROM dailies ORDER BY 1, 2",
    "SELECT * FROM ips ORDER BY 1",
    "SELECT * FROM hits ORDER BY 1",
    "SELECT * FROM referrers ORDER BY 1",
    "SELECT * FROM browsers ORDER BY 1, 2",
    "SELECT * FROM outcomes ORDER BY 1, 2, 3, 4",
    "SELECT * FROM counters ORDER BY 1",
    "SELECT count(*), count(DISTINCT text) FROM strings",
]


def dump(path):
    conn = sqlite3.connect(path)
    try:
        return [[tuple(r) for r in conn.execute(sql)] for sql in DUMPS]
    finally:
        conn.close()


text = st.sampled_from(["a", "b", "ünï", "x" * 300, "", "https://example.com/p?q=1"])
optional = {
    "url": text, "last": text, "browser": text, "ref": text, "ip": text, "uid": text,
    "outcome": text, "sink": text, "bhash": text, "ename": text, "country": text,
    "score": st.floats(allow_nan=False, allow_infinity=False) | st.none(),
    "duration": st.integers(-2**40, 2**40),
    "latlon": st.tuples(st.floats(-90, 90), st.floats(-180, 180)) | st.none()
    | st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=2)
    | st.lists(st.integers(-180, 180), min_size=2, max_size=2),
    "vp": st.tuples(st.integers(0, 5000), st.integers(0, 5000)),
    "params": st.dictionaries(st.sampled_from(["k", "browser_family", "ü"]), text, max_size=2),
    "new_visitor": st.booleans(),
    "robot_flag_not_a_column": st.booleans(),
}


@st.composite
def event(draw):
    ev = {"eid": str(uuid.UUID(int=draw(st.integers(0, 40)))),
          "vid": draw(st.sampled_from(VIDS)), "sid": draw(st.sampled_from(SIDS)),
          "created": T + draw(st.integers(0, 3)) * 43_200_000 + draw(st.integers(0, 2)),
          "first": draw(st.booleans())}
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=8)):
        ev[key] = draw(optional[key])
    return ev


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(event(), max_size=12), min_size=1, max_size=4))
def test_compiled_writer_stores_what_the_python_twin_stores(batches, monkeypatch):
    with tempfile.TemporaryDirectory() as d:
        compiled = make_sink(f"{d}/c.db", monkeypatch, pure=False)
        twin = make_sink(f"{d}/p.db", monkeypatch, pure=True)
        try:
            for batch in batches:
                # Each writer gets its own copies: a sink may not rely on events
                # being left as they were, but neither may change what it is given.
                a = compiled.write_batch_sync([dict(e) for e in batch])
                b = twin.write_batch_sync([dict(e) for e in batch])
                assert a == b
        finally:
            compiled.close_sync()
            twin.close_sync()
        assert dump(f"{d}/c.db") == dump(f"{d}/p.db")


def test_a_failed_batch_is_rolled_back_whole_and_retried(tmp_path, monkeypatch):
    sink = make_sink(tmp_path / "t.db", monkeypatch, pure=False)
    good = {"eid": str(uuid.uuid4()), "vid": VIDS[0], "sid": SIDS[0], "created": T,
            "first": True, "url": "https://example.com/new-text", "ip": "10.0.0.1"}
    bad = dict(good, eid=str(uuid.uuid4()), vid=None)       # ev.vid is NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        sink.write_batch_sync([good, bad])
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT count(*) FROM ev").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM strings").fetchone() == (0,)
    assert sink._strings.ids == {}            # the rolled-back id is not cached
    assert sink.write_batch_sync([good]) == 1
    assert sink.write_batch_sync([good]) == 0  # a replay lands nothing
    assert conn.execute("SELECT url, total FROM hits").fetchall() == [
        ("https://example.com/new-text", 1)]
    assert conn.execute("SELECT count(*) FROM strings").fetchone() == (1,)
    conn.close()
    sink.close_sync()


def test_a_malformed_uuid_is_refused_as_the_twin_refuses_it(tmp_path, monkeypatch):
    for pure in (False, True):
        sink = make_sink(tmp_path / f"{pure}.db", monkeypatch, pure=pure)
        with pytest.raises(ValueError):
            sink.write_batch_sync([{"eid": "not-a-uuid", "vid": VIDS[0], "sid": SIDS[0],
                                    "created": T, "first": False}])
        sink.close_sync()


@pytest.mark.parametrize("form", [
    str.upper,                                         # upper case
    lambda t: t.replace("-", ""),                      # no dashes
    lambda t: t[:1] + "-" + t[1:],                     # a dash inside a byte's digits
    lambda t: t + "-",                                 # a dash after the last digit
])
def test_uuid_text_in_other_forms_is_stored_as_the_twin_stores_it(tmp_path, monkeypatch, form):
    stored = {}
    for pure in (False, True):
        sink = make_sink(tmp_path / f"{pure}.db", monkeypatch, pure=pure)
        sink.write_batch_sync([{"eid": form(str(uuid.UUID(int=77))), "vid": form(VIDS[1]),
                                "sid": form(SIDS[2]), "created": T, "first": True}])
        sink.close_sync()
        conn = sqlite3.connect(tmp_path / f"{pure}.db")
        stored[pure] = conn.execute("SELECT eid, vid, sid FROM events").fetchall()
        conn.close()
    assert stored[False] == stored[True] == [(str(uuid.UUID(int=77)), VIDS[1], SIDS[2])]


def test_one_counter_statement_per_distinct_key(tmp_path, monkeypatch):
    sink = make_sink(tmp_path / "t.db", monkeypatch, pure=False)
    batch = [{"eid": str(uuid.uuid4()), "vid": VIDS[i % 2], "sid": SIDS[0], "created": T,
              "first": False, "ip": "10.0.0.1", "url": f"https://example.com/{i % 3}"}
             for i in range(50)]
    assert sink.write_batch_sync(batch) == 50
    # dailies 1 key, ips 1, hits 3
    assert sink._writer.counter_statements == 5
    sink.close_sync()


def test_a_value_that_cannot_be_bound_leaves_nothing_behind(tmp_path, monkeypatch):
    """A batch that fails while an event is half bound (uid bound, then a value
    of no SQLite type) must not leak that uid into the next batch's event."""
    for pure in (False, True):
        sink = make_sink(tmp_path / f"{pure}.db", monkeypatch, pure=pure)
        base = {"vid": VIDS[0], "sid": SIDS[0], "created": T, "first": False}
        bad = dict(base, eid=str(uuid.uuid4()), uid="left-over", app=["not", "text"])
        with pytest.raises(sqlite3.ProgrammingError):
            sink.write_batch_sync([bad])
        assert sink.write_batch_sync([dict(base, eid=str(uuid.uuid4()))]) == 1
        conn = sqlite3.connect(tmp_path / f"{pure}.db")
        assert conn.execute("SELECT uid, app FROM events").fetchall() == [(None, None)]
        conn.close()
        sink.close_sync()


@pytest.mark.parametrize("pair", [
    [48.8566, 2.3522], [-33.865143, 151.2099], [0.0, -0.0], [1e-05, 2.0], [0.0001, -0.0001],
    [9.999999999999999e-05, 1.0], [9999999999999998.0, 1e16], [5e-324, -180.0],
    [0.1 + 0.2, -179.99999999999997], [1.2345678901234568e+17, 3.0], [7, 8.5]])
def test_latlon_text_is_reprs_whichever_way_it_is_written(pair, tmp_path, monkeypatch):
    # The compiled writer writes most pairs with orjson; the text must be the
    # twin's (repr) for every magnitude, and for the lists decode makes.
    from engine.store.sinks.sqlite_model import latlon_text
    sink = make_sink(tmp_path / "t.db", monkeypatch, pure=False)
    assert sink.write_batch_sync([{"eid": str(uuid.uuid4()), "vid": VIDS[0], "sid": SIDS[0],
                                   "created": T, "first": False, "latlon": pair}]) == 1
    sink.close_sync()
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("SELECT latlon FROM ev").fetchone() == (latlon_text(pair),)
    conn.close()


def test_first_visits_and_referrals_keep_the_earliest_in_any_order(tmp_path, monkeypatch):
    """The compiled writer upserts each landed event's first-visit and referral
    candidate as it goes: within one batch, and across batches, the earliest
    by (created, eid) must win whatever order the events come in."""
    eids = [str(uuid.UUID(int=i)) for i in (7, 3, 5, 1)]
    # latest first; the last two tie on created and the lower eid must win
    late = [{"eid": eids[0], "vid": VIDS[0], "sid": SIDS[0], "created": T + 20, "first": True,
             "ref": "late"},
            {"eid": eids[1], "vid": VIDS[0], "sid": SIDS[0], "created": T + 10, "first": True,
             "ref": "middle"},
            {"eid": eids[2], "vid": VIDS[0], "sid": SIDS[0], "created": T + 5, "first": True,
             "ref": "tie-high"}]
    earliest = {"eid": eids[3], "vid": VIDS[0], "sid": SIDS[0], "created": T + 5,
                "first": True, "ref": "tie-low"}
    answers = []
    for pure in (False, True):
        path = tmp_path / f"{pure}.db"
        sink = make_sink(path, monkeypatch, pure=pure)
        assert sink.write_batch_sync(late) == 3
        conn = sqlite3.connect(path)
        firsts = ("SELECT hex(e.eid), r.ref FROM first_visits f JOIN ev e ON e.n = f.n "
                  "JOIN first_refs r ON r.vid = f.vid")
        assert conn.execute(firsts).fetchall() == [(uuid.UUID(eids[2]).hex.upper(), "tie-high")]
        assert sink.write_batch_sync([earliest]) == 1
        answers.append(conn.execute(firsts).fetchall())
        conn.close()
        sink.close_sync()
    assert answers[0] == answers[1] == [(uuid.UUID(eids[3]).hex.upper(), "tie-low")]


def _visit(eid, created, vid=VIDS[0], ref="r"):
    return {"eid": str(uuid.UUID(int=eid)), "vid": vid, "sid": SIDS[0], "created": created,
            "first": True, "ref": ref}


def _firsts(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT hex(f.vid), f.created, r.ref, r.created FROM first_visits f "
            "LEFT JOIN first_refs r ON r.vid = f.vid ORDER BY 1").fetchall()
    finally:
        conn.close()


def test_a_returning_visitors_upserts_that_cannot_win_are_skipped(tmp_path, monkeypatch):
    """The writer remembers each visitor's last first-visit and first-referral
    candidates: later ones are not upserted (they could not win), earlier or
    tied ones still are."""
    path = tmp_path / "t.db"
    sink = make_sink(path, monkeypatch, pure=False)
    assert sink.write_batch_sync([_visit(1, T + 10, ref="first")]) == 1
    assert sink._writer.firsts_skipped == 0
    assert sink.write_batch_sync([_visit(2, T + 20, ref="later"),
                                  _visit(3, T + 30, ref="latest")]) == 2
    assert sink._writer.firsts_skipped == 4          # two events, two tables each
    vid = uuid.UUID(VIDS[0]).hex.upper()
    assert _firsts(path) == [(vid, T + 10, "first", T + 10)]
    # an earlier event arriving late, and one tied with it, are upserted: they may win
    assert sink.write_batch_sync([_visit(5, T + 5, ref="earlier"),
                                  _visit(4, T + 5, ref="tie, lower eid")]) == 2
    assert sink._writer.firsts_skipped == 4
    assert _firsts(path) == [(vid, T + 5, "tie, lower eid", T + 5)]
    sink.close_sync()


def _erased_by_another_connection(sink, path):
    """``tracker erase`` deletes the visitor the writer remembers."""
    from engine.store.erase_sqlite import erase
    assert sink.write_batch_sync([_visit(1, T + 10, ref="before")]) == 1
    assert erase(str(path), [VIDS[0]], []).get("first_visits") == 1


def _rolled_back(sink, path):
    """The visitor's candidates were upserted in a batch that then failed."""
    bad = dict(_visit(2, T + 11), vid=VIDS[1], eid="not-a-uuid")
    with pytest.raises(ValueError):
        sink.write_batch_sync([_visit(1, T + 10, ref="rolled back"), bad])


@pytest.mark.parametrize("lose_rows", [_erased_by_another_connection, _rolled_back])
def test_a_visitor_whose_rows_are_gone_is_written_again(lose_rows, tmp_path, monkeypatch):
    """The writer remembered the visitor's candidates, but their rows are gone:
    the visitor's next (later) event must make them again."""
    path = tmp_path / "t.db"
    sink = make_sink(path, monkeypatch, pure=False)
    lose_rows(sink, path)
    assert _firsts(path) == []
    assert sink.write_batch_sync([_visit(3, T + 20, ref="again")]) == 1
    assert _firsts(path) == [(uuid.UUID(VIDS[0]).hex.upper(), T + 20, "again", T + 20)]
    sink.close_sync()


def test_the_writer_forgets_all_visitors_when_it_remembers_too_many(tmp_path, monkeypatch):
    from engine.store.sinks._sqlite_write import BatchWriter
    from engine.store.sinks.sqlite_model import Strings
    path = tmp_path / "t.db"
    make_sink(path, monkeypatch, pure=False).close_sync()     # the schema
    writer = BatchWriter(str(path), known_max=2)
    strings = Strings()
    assert writer.write([_visit(1, T, VIDS[0]), _visit(2, T, VIDS[1])], strings) == 2
    assert writer.write([_visit(3, T + 1, VIDS[0])], strings) == 1
    assert writer.firsts_skipped == 2
    # a third visitor fills it: cleared, the first visitor is upserted again
    assert writer.write([_visit(4, T, VIDS[2]), _visit(5, T + 2, VIDS[0])], strings) == 2
    assert writer.firsts_skipped == 2
    assert writer.write([_visit(6, T + 3, VIDS[0])], strings) == 1
    assert writer.firsts_skipped == 4
    writer.close()


def test_many_visitors_remembered_and_forgotten_store_what_the_twin_stores(tmp_path,
                                                                          monkeypatch):
    """Thousands of visitors, each with later and earlier events spread over
    batches: the writer with its default table, one that empties itself every
    300 visitors, and the twin (which upserts everything) agree."""
    import random
    from engine.store.sinks._sqlite_write import BatchWriter
    rnd = random.Random(17)
    vids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(3000)]
    batches = [[{"eid": str(uuid.UUID(int=b * 10_000 + i)), "vid": rnd.choice(vids),
                 "sid": SIDS[0], "created": T + rnd.randrange(0, 50_000),
                 "first": rnd.random() < 0.7, "ref": rnd.choice(["", "a", "b"])}
                for i in range(2000)] for b in range(4)]
    sinks = [make_sink(tmp_path / "default.db", monkeypatch, pure=False),
             make_sink(tmp_path / "small.db", monkeypatch, pure=False),
             make_sink(tmp_path / "twin.db", monkeypatch, pure=True)]
    sinks[1]._writer.close()
    sinks[1]._writer = BatchWriter(str(tmp_path / "small.db"), known_max=300)
    for batch in batches:
        assert len({s.write_batch_sync([dict(e) for e in batch]) for s in sinks}) == 1
    assert sinks[0]._writer.firsts_skipped > sinks[1]._writer.firsts_skipped > 0
    for s in sinks:
        s.close_sync()
    assert dump(tmp_path / "default.db") == dump(tmp_path / "small.db") \
        == dump(tmp_path / "twin.db")
