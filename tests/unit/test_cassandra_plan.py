"""How the Cassandra sink turns a batch into requests of one partition each
(engine/store/sinks/cassandra/plan.py). Pure functions: no node needed; the
integration tests (test_cassandra*.py) write the same plans to a real one."""
import json
import subprocess
import sys
import tempfile
import uuid

import pytest

from engine.config import config_from_dict
from engine.store.fanout import fan_out
from engine.store.sinks.cassandra import CassandraSink
from engine.store.sinks.cassandra.plan import (CELL_OVERHEAD, Planner, Settled,
                                               partition_of)
from engine.store.sinks.cassandra.wire_acsylla import AcsyllaCodec
from engine.store.sinks.cassandra.wire_datastax import DatastaxCodec

T0 = 1_800_000_000_000


def event(vid, created, **fields):
    ev = {"eid": str(uuid.uuid1()), "vid": vid, "sid": vid, "created": created,
          "first": False, "ip": "10.0.0.1", "params": {}}
    ev.update(fields)
    return ev


def visitors_batch(n_visitors=5, per_visitor=3):
    out = []
    for v in range(n_visitors):
        vid = str(uuid.uuid4())
        for i in range(per_visitor):
            out.append(event(vid, T0 + 10 * i + v, first=i == 0, uid=f"u{v}", ref="r",
                             url=f"https://s/{i}", latlon=[v, i], new_visitor=i == 0))
    return out


def sent_rows(plan):
    return [(w.table, r.partition) for r in plan.rows for w in r.writes]


@pytest.mark.parametrize("codec", [AcsyllaCodec, DatastaxCodec])
def test_every_request_holds_one_partition_and_every_write_is_planned(codec):
    events = visitors_batch()
    plan = Planner(codec).plan(events)
    batch = fan_out(events)
    # every write of a request has the request's partition (the plan's
    # values lead with the partition key; uuids as text for acsylla)
    text = Planner(AcsyllaCodec).plan(events)
    for r in text.rows:
        for w in r.writes:
            if w.table == "events":
                values = dict(w.values)
                assert r.partition == ("events", values[1], values[2])
            else:
                assert r.partition == partition_of(w.table, tuple(w.values[:1]))
    for r in text.counters:
        for w in r.writes:
            assert r.partition == partition_of(w.table, w.origin[1])
    # one events insert per event, one row write per fan-out winner, one increment per key
    tables = [t for t, _ in sent_rows(plan)]
    assert tables.count("events") == len(events)
    for table, winners in batch.rows.items():
        assert tables.count(table) == len(winners), table
    increments = {w.origin[:2]: w.origin[2] for r in plan.counters for w in r.writes}
    assert increments == {(t, k): n for t, c in batch.counters.items() for k, n in c.items()}
    assert plan.events == len(events)


def test_a_visitors_rows_share_one_request_and_counters_share_by_key_value():
    events = visitors_batch(n_visitors=1, per_visitor=4)
    vid = events[0]["vid"]
    plan = Planner(AcsyllaCodec).plan(events)
    by_partition = {r.partition: sorted(w.table for w in r.writes) for r in plan.rows}
    # visitors, sessions, nodes, locations, aliases, referrals: all partitioned by vid
    assert by_partition[("uuid", vid)] == sorted(
        ["visitors", "sessions", "nodes", "aliases", "referrals"] + ["locations"] * 4)
    assert by_partition[("events", vid, vid)] == ["events"] * 4
    assert by_partition[("text", "u0")] == ["users"]
    counters = {r.partition: sorted(w.table for w in r.writes) for r in plan.counters}
    assert counters[("text", "10.0.0.1")] == ["dailies", "ips"]     # same ip: one partition
    assert counters[("uuid", vid)] == ["reqs"]
    # one request per partition (none is large here), counted as partitions
    assert len(plan.rows) + len(plan.counters) == plan.partitions


def test_a_large_partition_splits_by_statements_and_by_size():
    vid = str(uuid.uuid4())
    events = [event(vid, T0 + i, latlon=[i, 0]) for i in range(40)]
    plan = Planner(AcsyllaCodec, max_statements=16, max_bytes=10 ** 6).plan(events)
    locations = [r for r in plan.rows if r.partition == ("uuid", vid)]
    assert [len(r.writes) for r in locations] == [16, 16, 9]        # 40 locations + 1 node
    big = "x" * 1500
    events = [event(vid, T0 + i, url=big) for i in range(6)]
    plan = Planner(AcsyllaCodec, max_statements=16, max_bytes=4096).plan(events)
    sizes = [len(r.writes) for r in plan.rows if r.partition == ("events", vid, vid)]
    assert sizes == [2, 2, 2] and all(
        sum(w.size for w in r.writes) <= 4096 for r in plan.rows if len(r.writes) > 1)
    assert all(w.size > 1500 + CELL_OVERHEAD for r in plan.rows for w in r.writes
               if w.table == "events")


def test_conditional_inserts_go_alone():
    plan = Planner(AcsyllaCodec, paxos=True).plan(visitors_batch(n_visitors=2))
    alone = [r for r in plan.rows if r.conditional]
    assert sorted({r.writes[0].table for r in alone}) == [
        "aliases", "referrals", "sessions", "users", "visitors"]
    assert all(len(r.writes) == 1 for r in alone)
    assert not any(w.table in ("visitors", "sessions") for r in plan.rows if not r.conditional
                   for w in r.writes)


def test_rows_an_earlier_confirmed_event_already_wins_are_not_sent_again():
    planner = Planner(AcsyllaCodec)
    vid = str(uuid.uuid4())
    first = planner.plan([event(vid, T0, first=True, uid="a", ref="r")])
    planner.settled.confirm([w.origin for r in first.rows for w in r.writes if w.origin])
    later = planner.plan([event(vid, T0 + 1000, first=True, uid="a", ref="r2")])
    assert sorted(t for t, _ in sent_rows(later)) == ["events", "nodes"]   # the rest loses
    earlier = planner.plan([event(vid, T0 - 1000, first=True, uid="a", ref="r0")])
    assert sorted(t for t, _ in sent_rows(earlier)) == sorted(
        ["events", "nodes", "visitors", "sessions", "aliases", "users", "referrals"])
    # counters are never skipped
    assert sum(len(r.writes) for r in later.counters) == sum(len(r.writes) for r in first.counters)


def test_settled_forgets_everything_at_its_limit():
    s = Settled(limit=3)
    s.confirm([("visitors", ("a",), 5), ("visitors", ("b",), 5)])
    s.confirm([("visitors", ("a",), 4)])                     # a later event: stays 5
    assert s.tables == {"visitors": {("a",): 5, ("b",): 5}} and s.count == 2
    s.confirm([("visitors", ("c",), 5), ("aliases", ("a", "u"), 6)])
    assert s.tables == {"visitors": {("c",): 5}, "aliases": {("a", "u"): 6}} and s.count == 2


def test_values_as_each_driver_binds_them():
    ev = event("3d0be300-cbd2-11e8-aa59-ffd128a54d91", T0 + 123, latlon=[1.5, 2.0], vp=[3, 4],
               outcome="won", params={"k": "v"})
    acs = Planner(AcsyllaCodec).plan([ev])
    values = dict(next(w.values for r in acs.rows for w in r.writes if w.table == "events"))
    assert int(values[3] * 1000) == T0 + 123            # acsylla: seconds, never 1 ms short
    assert values[7] == {"lat": 1.5, "lon": 2.0} and values[8] == {"w": 3, "h": 4}
    assert values[9] == {"k": "v"}
    dailies = next(w.values for r in acs.counters for w in r.writes if w.table == "dailies")
    assert dailies == [1, "10.0.0.1", (T0 // 86_400_000) * 86_400]
    ds = Planner(DatastaxCodec).plan([ev])
    dvalues = dict(next(w.values for r in ds.rows for w in r.writes if w.table == "events"))
    assert dvalues[0] == uuid.UUID(ev["eid"]) and dvalues[3] == T0 + 123
    # an event without the optional fields writes only what it has
    bare = Planner(AcsyllaCodec).plan([event(str(uuid.uuid4()), T0)])
    pairs = next(w.values for r in bare.rows for w in r.writes if w.table == "events")
    assert sorted(i for i, _ in pairs) == [0, 1, 2, 3, 6, 14]   # eid vid sid created first ip


def test_acsylla_timestamps_never_lose_a_millisecond():
    for ms in range(T0, T0 + 5000):
        assert int(AcsyllaCodec.ts(ms) * 1000) == ms
    assert AcsyllaCodec.day("1970-01-02") == 86_400
    assert AcsyllaCodec.day("2026-11-28") == 20_785 * 86_400


def sink(**entry):
    cfg = config_from_dict({"TLS": "off", "SpoolDirectory": tempfile.mkdtemp(), "Notify": [
        {"Service": "cassandra", "Hosts": ["127.0.0.1:1"], **entry}]})
    return CassandraSink(cfg.notify[0], cfg)


def test_default_and_bounds():
    s = sink()
    assert (s.row_batch, s.driver, s.consistency_name) == (16, "native", "LOCAL_ONE")
    assert (s.concurrency, sink(Driver="acsylla").concurrency) == (512, 128)
    assert sink(Concurrency=64).concurrency == 64
    # the native wire has no TLS or authentication: with either, acsylla is the default
    assert sink(Username="u", Password="p").driver == sink(CACert="/ca.pem").driver == "acsylla"
    with pytest.raises(ValueError, match='Driver "native" has no TLS or authentication'):
        sink(Driver="native", Secure=True)
    assert sink(RowBatch=0).row_batch == 16          # 0: the Go zero value
    for bad in (0.5, 65, -1, "8"):
        with pytest.raises(ValueError, match="RowBatch: got"):
            sink(RowBatch=bad)
    with pytest.raises(ValueError, match="Concurrency: got 'many'"):
        sink(Concurrency="many")
    with pytest.raises(ValueError, match="Driver: got 'gocql', expected one of acsylla, "
                                         "native, cassandra-driver"):
        sink(Driver="gocql")
    with pytest.raises(ValueError, match="Consistency: got 'MOST'"):
        sink(Consistency="most")
    assert sink(Consistency="local_quorum").consistency_name == "LOCAL_QUORUM"


def test_check_config_reports_a_bad_store_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"TLS": "off", "Notify": [
        {"Service": "sqlite", "Path": str(tmp_path / "t.db")},
        {"Service": "cassandra", "Hosts": ["127.0.0.1"], "RowBatch": 100}]}))
    run = subprocess.run([sys.executable, "-m", "engine.cli", "check-config", "--config",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "Notify[1] (cassandra): cassandra RowBatch: got 100, expected an integer, 1 to 64" \
        in run.stderr


def test_the_inlined_partitions_are_partition_of():
    from engine.store.sinks.cassandra.cql import COUNTER_TABLES, ROW_TABLES
    from engine.store.sinks.cassandra.plan import first_column_partition, partition_of
    tables = [t.name for t in ROW_TABLES] + list(COUNTER_TABLES)
    inlined = {t: first_column_partition(t) for t in tables}
    assert inlined["visitors"] == inlined["reqs"] == "uuid" and inlined["users"] == "text"
    assert inlined["browsers"] is None and inlined["outcomes"] is None   # two-column partitions
    for table, kind in inlined.items():
        for key in (("a", "b"), ("b", "a", "c", "2026-11-30")):
            if kind is not None:
                assert partition_of(table, key) == (kind, key[0]), table
            else:
                assert len(partition_of(table, key)) == 3, table
