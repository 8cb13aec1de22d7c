"""``Driver: "native"`` (wire_native.py: the sink's own CQL connections)
against a real Cassandra 5.0 node: it stores exactly what acsylla stores, row
for row and column for column, in every table; its tokens are the node's;
and it survives the node going away and coming back (test_cassandra.py's
restart test runs with both drivers, test_cassandra_cluster.py's node loss
too)."""
import asyncio
import uuid

import pytest

from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.cassandra import _cqlframe
from engine.store.sinks.cassandra.plan import Write

from cassandra_fixtures import cql, node, wait_session_up  # noqa: F401
from test_cassandra import corpus, make_sink

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000


def messages():
    logs = [{"ldate": "2026-11-30", "created": T0 + i, "ltime": 1000 + i,
             "id": str(uuid.UUID(int=i + 1)), "name": "edge", "host": "h1",
             "hostname": "h1.local", "owner": "o", "ip": "10.0.0.9",
             "level": 6, "msg": f"line {i}", "params": {"k": str(i)}} for i in range(5)]
    counts = {"signups": 3, "orders": 7}
    updates = [{"id": "u1", "updated": T0 + 5, "msg": "later", "params": {"a": "1"}},
               {"id": "u1", "updated": T0 + 1, "msg": "earlier", "params": {}}]
    return logs, counts, updates


def store(node, ks, driver, events):
    async def run():
        sink = make_sink(node, ks, Driver=driver)
        await sink.start()
        try:
            assert sink.wire.name == driver
            for i in range(0, len(events), 41):
                await sink.write_batch(events[i:i + 41])
            await sink.write_messages(*messages())
        finally:
            await sink.close()
    asyncio.run(make_sink(node, ks).apply_schema())
    asyncio.run(run())


def every_row(cql, ks):
    tables = sorted(r.table_name for r in cql.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", [ks]))
    return {t: sorted(repr(tuple(r)) for r in cql.execute(f"SELECT * FROM {ks}.{t}"))
            for t in tables}


def test_native_stores_what_acsylla_stores_in_every_table(node, cql):
    events = corpus()
    store(node, "ks_by_acsylla", "acsylla", events)
    store(node, "ks_by_native", "native", events)
    by_acsylla, by_native = every_row(cql, "ks_by_acsylla"), every_row(cql, "ks_by_native")
    assert by_acsylla.keys() == by_native.keys()
    assert len(by_acsylla["events"]) == len(events)
    filled = [t for t, rows in by_acsylla.items() if rows]
    assert {"events", "visitors", "locations", "hits", "logs", "updates", "counters"} <= set(filled)
    for table in by_acsylla:
        assert by_native[table] == by_acsylla[table], table


def test_tokens_are_the_nodes(node, cql):
    ks = "ks_by_native"
    rows = list(cql.execute(f"SELECT token(vid) AS t, vid FROM {ks}.visitors"))
    assert len(rows) > 20
    assert all(_cqlframe.token(r.vid.bytes) == r.t for r in rows)
    rows = list(cql.execute(f"SELECT token(url) AS t, url FROM {ks}.hits"))
    assert rows and all(_cqlframe.token(r.url.encode()) == r.t for r in rows)


def test_a_restarted_node_is_reconnected_and_nothing_is_written_twice(node, cql):
    ks = "ks_native_restart"
    events = corpus(60)

    async def run():
        sink = make_sink(node, ks, Driver="native")
        await sink.start()
        try:
            await sink.write_batch(events[:30])
            await asyncio.to_thread(node.stop)
            with pytest.raises(SinkUnavailable):
                await sink.write_batch(events[30:])
            assert not sink.wire.conns               # the lost connection is dropped
            await asyncio.to_thread(node.start)
            deadline = asyncio.get_running_loop().time() + 90
            while True:                              # a store process retries the batch
                try:
                    await sink.write_batch(events[30:])
                    break
                except SinkUnavailable:
                    assert asyncio.get_running_loop().time() < deadline, "never reconnected"
                    await asyncio.sleep(0.5)
            assert list(sink.wire.conns) == ["127.0.0.1"]
        finally:
            await sink.close()
    asyncio.run(make_sink(node, ks).apply_schema())
    asyncio.run(run())
    wait_session_up(cql)
    stored = [str(r.eid) for r in cql.execute(f"SELECT eid FROM {ks}.events")]
    assert sorted(stored) == sorted(e["eid"] for e in events)
    reqs = sum(r.total for r in cql.execute(f"SELECT total FROM {ks}.reqs"))
    assert reqs == len(events)       # the failed batch's counters were never sent


def test_a_value_the_column_cannot_take_fails_that_request_only(node, cql):
    ks = "ks_native_bad"

    async def run():
        sink = make_sink(node, ks, Driver="native")
        await sink.start()
        try:
            wire = sink.wire
            good = str(uuid.uuid4())
            requests = sink.planner.counter_requests({("reqs", (good,)): 2})
            bad = sink.planner.counter_requests({("reqs", (str(uuid.uuid4()),)): 1})
            bad[0].writes[0] = Write("reqs", [1, "not-a-uuid"], 0)
            errors = await wire.send(bad + requests, 8)
            assert isinstance(errors[0], _cqlframe.CqlValueError) and wire.unsent(errors[0])
            assert errors[1:] == [None]
            return good
        finally:
            await sink.close()
    asyncio.run(make_sink(node, ks).apply_schema())
    good = asyncio.run(run())
    assert [(str(r.vid), r.total) for r in cql.execute(f"SELECT * FROM {ks}.reqs")] == [(good, 2)]


def test_tls_or_authentication_with_native_is_refused_with_a_clear_error(node):
    with pytest.raises(ValueError, match='Driver "native" has no TLS or authentication'):
        make_sink(node, "ks_x", Driver="native", Username="u", Password="p")
