"""The report kinds on a generated SQLite store (visits with funnel steps,
referrals by code and by an earlier visitor's vid, experiments; written
through the SQLite sink): the funnel's single pass and
the referral loop's Python aggregation equal engine/store/queries.py's SQL
of the same definitions, and the page shows every row's figures."""
import random
import types

import pytest

from engine import _parse
from engine.reports import growth, open_store, page, run, KINDS
from engine.reports.render import format_cell
from engine.store import queries
from engine.store.sinks.sqlite import SQLiteSink

STEPS = ["view", "cart", "checkout", "buy"]


def visits(n, rnd, start_ms):
    """Spool records of ``n`` visits, a visit every 2 s, steps 1 s apart
    (some out of order, some in the same millisecond)."""
    ids, earlier = _parse.TimeUUIDGen(), []
    for i in range(n):
        created = start_ms + 2000 * i
        path = b"/tr/v1/ename/view/url/https%%3A%%2F%%2Fshop%%2Fp%d" % rnd.randint(1, 30)
        if rnd.random() < 0.6:
            ref = rnd.choice(earlier).encode() if earlier and rnd.random() < 0.4 \
                else b"code%d" % rnd.randint(1, 5)
            path += b"/ref/" + ref
        if rnd.random() < 0.5:
            path += b"/xid/x%d/split/%s" % (rnd.randint(1, 2), rnd.choice((b"A", b"B")))
        record = _parse.encode_track(path, None, None, "127.0.0.1", b"ua", None, None,
                                     created, ids)
        yield record
        event = _parse.decode(record)
        earlier.append(event["vid"])
        names = rnd.sample(STEPS[1:], rnd.randint(0, 3))
        if rnd.random() < 0.8:
            names.sort(key=STEPS.index)
        for k, name in enumerate(names):
            step = b"/tr/v1/ename/%s/sid/%s" % (name.encode(), event["sid"].encode())
            if name == "buy":
                step += b"/outcome/purchase"
            later = 0 if rnd.random() < 0.1 else 1000 * (k + 1)
            yield _parse.encode_track(step, None, None, "127.0.0.1", b"ua", None,
                                      event["vid"].encode(), created + later, ids)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("kinds") / "t.db")
    sink = SQLiteSink({"Service": "sqlite", "Path": path},
                      types.SimpleNamespace(schema_version=1, batch_max_events=1000))
    sink.start_sync()
    events = [_parse.decode(r) for r in visits(2500, random.Random(7), 1_795_000_000_000)]
    for i in range(0, len(events), 1000):
        sink.write_batch_sync(events[i:i + 1000])
    sink.close_sync()
    conn = open_store(path)
    yield conn
    conn.close()


@pytest.mark.parametrize("steps", [STEPS, ["cart", "buy"], ["view", "view", "cart"], ["nope"]])
def test_funnel_pass_equals_the_sql(store, steps):
    assert growth.funnel_counts(store, 0, 1 << 62, steps) == [
        n for _, n in queries.funnel(store, 0, 1 << 62, steps)]


def test_funnel_over_a_time_range_equals_the_sql(store):
    lo, hi = store.execute("SELECT min(created), max(created) FROM ev").fetchone()
    mid = (lo + hi) // 2
    assert growth.funnel_counts(store, mid, hi, STEPS) == [
        n for _, n in queries.funnel(store, mid, hi, STEPS)]


def test_loops_equal_the_sql(store):
    report = growth.loops(store, 0, 1 << 62, limit=1000)
    sql = queries.loops(store, 0, 1 << 62, limit=1000)
    assert [(r["ref"], r["brought"], r["converted"], r["referred"]) for r in report.rows] == sql
    vid_referrals = [r for r in sql if len(r[0]) == 36]
    assert vid_referrals, "the corpus refers visitors by vid"
    assert report.summary["referred_visitors"] == sum(r[1] for r in sql)
    assert report.summary["cycles"] == sum(r[1] for r in vid_referrals)
    assert report.summary["median_cycle_seconds"] > 0


def test_page_shows_every_kind(store):
    reports = {kind: run(kind, store, 0, 1 << 62, steps=STEPS) for kind in KINDS}
    html = page.page(reports, {"steps": ",".join(STEPS)}, "now")
    for row in reports["experiments"].rows:
        key = f'data-k="experiments.{row["xid"]}.{row["split"]}.p_value"'
        assert key + ">" + format_cell("p_value", row["p_value"]) + "<" in html
    assert "<script" not in html


def test_page_escapes_what_events_carry():
    from engine.reports.report import Report
    evil = '<script>alert(1)</script>"'
    reports = {"traffic": Report("traffic", ("day", "events", "visitors", "sessions",
                                             "new_visitors"), [], {"events": 0,
                                                                   "new_visitors": 0}),
               "experiments": Report("experiments", ("xid", "split", "visitors"), []),
               "loops": Report("loops", ("ref",), [{"ref": evil}],
                               {"k": None, "median_cycle_seconds": None,
                                "referred_visitors": 0, "their_referrals": 0}),
               "pages": Report("pages", ("url", "events"), [{"url": evil, "events": 1}]),
               "referrers": Report("referrers", ("ref",), []),
               "campaigns": Report("campaigns", ("source",), [{"source": evil}])}
    html = page.page(reports, {"steps": evil}, "now")
    assert "<script" not in html and "&lt;script&gt;" in html


def test_the_corpus_reaches_every_step(store):
    counts = growth.funnel_counts(store, 0, 1 << 62, STEPS)
    assert counts[0] == 2500 and all(counts[k] > counts[k + 1] > 0 for k in range(3)), counts
