"""Fault injection with a real Cassandra node (issue 8): the node stops for
~20 s under a steady load, an HTTP worker and then the store process are
killed with SIGKILL while it is down, and afterwards SQLite and Cassandra
both hold every 2xx event exactly once, with exact counters.

The node is a real Cassandra 5.0 (scripts/cassandra_node.py), started once
for this module and stopped / restarted in place (same data directory and
ports), so the test pays for one JVM start-up (plus the restart it is about).
Like tests/integration/test_cassandra.py, it FAILS without a JDK and Maven.
(Each module has its own node from cassandra_fixtures; the two are never up at the
same time, pytest tears one module's node down before the next module.)

Counters: SQLite's are checked exactly. Cassandra's are checked exactly too,
unless the stop caught a batch's counter phase in flight (``counter_doubt``
reads that from the collector's log): then an increment's outcome was unknown
and it is re-sent from the sink's counter residue (engine/store/sinks/cassandra/sink.py,
"Counters and replays"; a killed store process's residue is adopted by its
replacement, never replayed whole). In that case the test asserts the documented
at-least-once behaviour (never fewer, same keys) and prints the over-count.
Events are exact in both stores in every case.
"""
import asyncio
import collections
import datetime
import glob
import json
import os
import signal
import time

import pytest

from engine.config import config_from_dict
from engine.store.sinks.cassandra import CassandraSink

from cassandra_fixtures import (count_rows, counter_doubt, cql, entry, node,  # noqa: F401
                                wait_session_up)
from faultload import Load

pytestmark = pytest.mark.integration

RESTART_AFTER = 8      # s after the stop; the node accepts CQL again ~20 s later


def apply_schema(node, keyspace):
    cfg = config_from_dict({"TLS": "off", "Notify": [entry(node, keyspace)]})
    asyncio.run(CassandraSink(cfg.notify[0], cfg).apply_schema())


def wait_until(check, timeout=60, what="condition", interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def spool_acks(spool_dir, pid):
    """{path: {sink id: seq written}} of each spool file of worker ``pid``."""
    from engine.spool import read_position
    return {path: {sid: read_position(path, sid)[0] for sid in ("0-sqlite", "1-cassandra")}
            for path in glob.glob(os.path.join(spool_dir, f"w{pid}-*.spool"))}


def spool_records(path):
    from engine.spool import read_records
    records, _ = read_records(path)
    return records[-1][0] if records else 0


def utc_day(created):
    """The UTC day of an event's ``created`` (SQLite: ISO text; Cassandra: datetime)."""
    if isinstance(created, datetime.datetime):
        return created.date()
    if isinstance(created, str):
        return datetime.date.fromisoformat(created[:10])
    return datetime.date(1970, 1, 1) + datetime.timedelta(days=int(created) // 86_400_000)


def test_cassandra_outage_and_a_killed_worker_lose_and_duplicate_nothing(node, cql,
                                                                         collector_factory):
    ks = "ks_faults"
    apply_schema(node, ks)
    c = collector_factory({
        "Notify": [{"Service": "sqlite", "Path": "tracker.db", "Critical": True},
                   entry(node, ks, Critical=False)],
        "BatchMaxAgeMs": 50, "MaxBodyBytes": 2000, "DrainTimeoutSeconds": 30,
    }, workers=2)
    spool_dir = os.path.join(c.dir, "spool")
    load = Load(c, threads=3, pause=0.01).start()
    try:
        load.wait_more(200)                              # steady traffic, both stores up
        wait_until(lambda: count_rows(cql, f"{ks}.events") > 50,
                   what="events reaching Cassandra before the outage")

        # ---- Cassandra down -----------------------------------------------
        down_at = time.monotonic()
        node.stop()
        print(f"cassandra stopped in {time.monotonic() - down_at:.1f} s")
        wait_until(lambda: '"sink write failed; batch kept for retry"' in c.logs()
                   and "cassandra" in c.logs(), what="the collector noticing the outage")
        load.wait_more(200)                              # still answering 2xx from the spool

        # ---- kill -9 a worker holding un-acknowledged Cassandra batches ------
        victim = c.worker_pids()[0]

        def victim_behind():
            # SQLite has acknowledged more of the victim's spool than Cassandra
            for path, acks in spool_acks(spool_dir, victim).items():
                if acks["0-sqlite"] > acks["1-cassandra"] + 20:
                    return path, acks
            return None
        victim_spool, acks = wait_until(victim_behind, 30,
                                        "the victim's spool to hold undelivered Cassandra "
                                        "batches")
        os.kill(victim, signal.SIGKILL)
        records_in_victim_spool = spool_records(victim_spool)
        print(f"killed worker {victim}: spool {os.path.basename(victim_spool)} has "
              f"{records_in_victim_spool} records, acks {acks}")
        assert records_in_victim_spool > acks["1-cassandra"]
        wait_until(lambda: c.replaced("http", [victim], 2),
                   what="a replacement worker")
        # ---- and kill -9 the store process while Cassandra is still down ----
        # Its counter residue (if any) is adopted by the replacement; the
        # replacement resumes every file, the victim's too, at each sink's position.
        [store] = c.store_pids()
        os.kill(store, signal.SIGKILL)
        wait_until(lambda: c.replaced("store", [store], 1),
                   what="a replacement store process")
        assert os.path.exists(victim_spool)
        load.wait_more(100)

        # ---- Cassandra back -------------------------------------------------
        # The restart itself takes ~10-25 s (JVM start, commit log replay), so
        # it begins once the node has been down for RESTART_AFTER seconds.
        remaining = RESTART_AFTER - (time.monotonic() - down_at)
        if remaining > 0:
            time.sleep(remaining)
        node.start()
        wait_session_up(cql)    # the counts and reads below go through this session
        print(f"cassandra down for {time.monotonic() - down_at:.1f} s in total "
              f"(restart {node.start_seconds:.1f} s)")
        wait_until(lambda: '"sink recovered"' in c.logs(), 90, "a sink recovering")
        load.wait_more(200)
    finally:
        load.stop()

    # every accepted event reaches Cassandra (driver reconnection backs off up to
    # 10 s), the victim's spool is finished and deleted; only then the clean stop
    expected = len(load.ok)
    wait_until(lambda: count_rows(cql, f"{ks}.events") >= expected, 120, "the backlog written to Cassandra",
               interval=0.5)
    wait_until(lambda: not os.path.exists(victim_spool), 60, "the victim's spool finished")
    assert c.stop() == 0
    logs = c.logs()
    assert "drain timed out" not in logs
    assert "undelivered events stay in the spool" not in logs
    assert [n for n in os.listdir(spool_dir) if n.endswith(".spool")] == []

    # ---- events: SQLite == Cassandra == 2xx (+ at most the in-doubt ones) ----
    lite = c.rows("SELECT eid, vid, url, ip, created, params FROM events")
    lite_markers = [json.loads(r["params"])["mk"] for r in lite]
    cass = list(cql.execute(f"SELECT eid, vid, url, ip, created, params FROM {ks}.events"))
    cass_markers = [r.params["mk"] for r in cass]
    kept_in_doubt = load.check_stored(lite_markers, "SQLite")
    load.check_stored(cass_markers, "Cassandra")
    assert sorted(lite_markers) == sorted(cass_markers)
    assert {r["eid"] for r in lite} == {str(r.eid) for r in cass}
    assert load.answers[400] > 0 and load.answers[413] > 0, load.answers
    print(f"2xx {expected}, answers {dict(load.answers)}, in doubt {len(load.unknown)} "
          f"(kept {len(kept_in_doubt)}), stored {len(lite)}")

    # ---- counters, exact in both stores -------------------------------------
    n = len(lite)
    want_reqs = collections.Counter(r["vid"] for r in lite)
    want_hits = collections.Counter(r["url"] for r in lite if r["url"])
    want_dailies = collections.Counter((r["ip"], utc_day(r["created"])) for r in lite)

    def sqlite_counter(table, *key):
        return {tuple(r[k] for k in key) if len(key) > 1 else r[key[0]]: r["total"]
                for r in c.rows(f"SELECT * FROM {table}")}
    assert sqlite_counter("reqs", "vid") == dict(want_reqs)
    assert sqlite_counter("hits", "url") == dict(want_hits)
    assert sum(r["total"] for r in c.rows("SELECT total FROM dailies")) == n

    cass_reqs = {str(r.vid): r.total for r in cql.execute(f"SELECT vid, total FROM {ks}.reqs")}
    cass_hits = {r.url: r.total for r in cql.execute(f"SELECT url, total FROM {ks}.hits")}
    cass_dailies = {(r.ip, utc_day(r.day.days_from_epoch * 86_400_000)
                     if hasattr(r.day, "days_from_epoch") else r.day): r.total
                    for r in cql.execute(f"SELECT ip, day, total FROM {ks}.dailies")}
    over = {"reqs": sum(cass_reqs.values()) - n, "hits": sum(cass_hits.values()) - n,
            "dailies": sum(cass_dailies.values()) - n}
    # Cassandra counters are not idempotent (engine/store/sinks/cassandra/sink.py, "Counters and
    # replays"): they can count twice only when the node stopped while a batch's
    # counter phase was in flight (an increment with an unknown outcome is re-sent
    # from the residue). The sink logs every failed counter phase: see counter_doubt.
    counters_in_doubt = counter_doubt(logs)
    print(f"cassandra counter totals minus events: {over}; "
          f"counter writes in doubt at the stop: {counters_in_doubt or 'none'}")
    if not counters_in_doubt:
        assert cass_reqs == dict(want_reqs)
        assert cass_hits == dict(want_hits)
        assert cass_dailies == dict(want_dailies)
    else:   # at-least-once: never fewer, and the same keys
        assert set(cass_reqs) == set(want_reqs) and set(cass_hits) == set(want_hits)
        assert set(cass_dailies) == set(want_dailies)
        assert all(cass_reqs[k] >= v for k, v in want_reqs.items())
        assert all(cass_hits[k] >= v for k, v in want_hits.items())
        assert all(cass_dailies[k] >= v for k, v in want_dailies.items())
