"""Erasure and retention (issue 21) against a real Cassandra 5.0 node: a
running collector writes, `tracker erase` deletes one visitor's partitions
(and a uid's), `RetentionDays` gives the row tables a TTL."""

import pytest

from cassandra_fixtures import cql, entry, node  # noqa: F401 (fixtures)
from conftest import run_tracker, wait_for

pytestmark = pytest.mark.integration

KS = "erasure"
ANN = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"
BOB = "4e1cf411-cbd2-11e8-aa59-ffd128a54d91"
EVE = "6a3e1633-cbd2-11e8-aa59-ffd128a54d91"
S1 = "5f2d0522-cbd2-11e8-aa59-ffd128a54d91"
S2 = "5f2d0523-cbd2-11e8-aa59-ffd128a54d91"
VID_TABLES = ("events", "visitors", "sessions", "nodes", "locations", "aliases", "referrals",
              "affiliates", "reqs")


def tracker(*args):
    return run_tracker(*args, timeout=180)


def rows_of(cql, vid):
    found = {}
    for table in VID_TABLES:
        if table == "events":
            n = sum(cql.execute(f"SELECT count(*) FROM {KS}.events WHERE vid = {vid} "
                                f"AND sid = {sid}").one()[0] for sid in (S1, S2))
        else:
            n = cql.execute(f"SELECT count(*) FROM {KS}.{table} WHERE vid = {vid}").one()[0]
        if n:
            found[table] = n
    return found


def test_erase_and_retention_on_cassandra(node, cql, collector_factory):
    c = collector_factory({"Notify": [entry(node, KS, Critical=True)], "RetentionDays": 30,
                           "SchemaVersion": 1}, start=False)
    applied = tracker("schema", "apply", "--config", c.config_path)
    assert applied.returncode == 0, applied.stderr
    c.start()
    for vid, uid in ((ANN, None), (BOB, "bob"), (EVE, None)):
        for sid in (S1, S2):
            event = {"vid": vid, "sid": sid, "ename": "view", "url": "https://example.com/",
                     "lat": 1.5, "lon": 2.5, "ref": "https://news.example/", "aff": "a1"}
            if uid:
                event.update(uid=uid, username="bob@example.com")
            assert c.post("/tr/v1/", event)[0] == 200
    assert wait_for(lambda: all(rows_of(cql, v).get("events") == 2 for v in (ANN, BOB, EVE)),
                    timeout=60)
    assert rows_of(cql, ANN).keys() >= {"events", "visitors", "sessions", "nodes", "reqs"}
    assert cql.execute(f"SELECT count(*) FROM {KS}.users WHERE uid = 'bob'").one()[0] == 1

    # RetentionDays: the row tables carry a 30-day TTL, counters none
    ttl = {r.table_name: r.default_time_to_live for r in cql.execute(
        "SELECT table_name, default_time_to_live FROM system_schema.tables "
        f"WHERE keyspace_name = '{KS}'")}
    assert ttl["events"] == ttl["visitors"] == ttl["usernames"] == 30 * 86400
    assert ttl["reqs"] == 0 and ttl["sequences"] == 0
    left = cql.execute(f"SELECT TTL(ename) FROM {KS}.events WHERE vid = {ANN} AND sid = {S1}")
    assert 29 * 86400 < left.one()[0] <= 30 * 86400

    out = tracker("erase", "--config", c.config_path, "--vid", ANN, "--uid", "bob")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cassandra" in out.stdout and "events 4" in out.stdout, out.stdout
    assert rows_of(cql, ANN) == {} and rows_of(cql, BOB) == {}
    assert rows_of(cql, EVE).get("events") == 2
    assert cql.execute(f"SELECT count(*) FROM {KS}.users WHERE uid = 'bob'").one()[0] == 0
    assert cql.execute(f"SELECT count(*) FROM {KS}.usernames WHERE username = "
                       "'bob@example.com'").one()[0] == 0
    again = tracker("erase", "--config", c.config_path, "--vid", ANN, "--uid", "bob")
    assert again.returncode == 0 and "nothing to delete" in again.stdout
    assert c.stop() == 0
