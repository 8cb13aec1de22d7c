"""Three Cassandra nodes (127.0.0.2-.4, RF 3, LOCAL_QUORUM) behind a running
collector; one node is killed under load and restarted. Every event answered
2xx is in ``events`` exactly once; the writes went on while the node was down
(two replicas make a quorum); the restarted node catches up (hints) until its
own copy holds every event. Counters: exact unless a counter request was in
flight on the killed node (its outcome is then unknown and the residue resends
it: at least once, engine/store/sinks/cassandra/sink.py).

The cluster starts once for this module (three JVMs one after another, about a
minute) and is reused by every test here.
"""
import asyncio
import collections
import time

import pytest

from engine.config import config_from_dict
from engine.store.sinks.cassandra import CassandraSink

from cassandra_fixtures import cluster, counter_doubt  # noqa: F401
from faultload import Load

pytestmark = pytest.mark.integration

RF3 = {"class": "NetworkTopologyStrategy", "datacenter1": 3}


def cluster_entry(cluster, keyspace, **extra):
    e = {"Service": "cassandra", "Context": keyspace, "Timeout": 5000,
         "Hosts": [f"{a}:{cluster.native_port}" for a in cluster.addresses],
         "Replication": RF3, "Consistency": "LOCAL_QUORUM"}
    e.update(extra)
    return e


def session(cluster, address=None, consistency="QUORUM"):
    """A cassandra-driver session: the whole cluster, or ``address`` alone."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy, WhiteListRoundRobinPolicy
    policy = WhiteListRoundRobinPolicy([address]) if address else RoundRobinPolicy()
    profile = ExecutionProfile(load_balancing_policy=policy, request_timeout=60,
                               consistency_level=getattr(ConsistencyLevel, consistency))
    c = Cluster([address] if address else cluster.addresses, port=cluster.native_port,
                execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    return c.connect()


def count(s, table):
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable
    from cassandra.cluster import NoHostAvailable
    try:
        return s.execute(f"SELECT count(*) FROM {table}").one()[0]
    except (NoHostAvailable, OperationTimedOut, ReadTimeout, Unavailable):
        return -1


def wait_until(check, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


DRIVERS = ["acsylla", "native"]


def test_a_node_killed_under_load_loses_and_doubles_no_event(cluster, collector_factory):
    """One collector per driver, each writing its own keyspace, both under
    load through the same kill and restart (one kill for both: a restart
    and its catch-up take minutes here)."""
    stores = {}
    for driver in DRIVERS:
        ks = f"ks_node_loss_{driver}"
        cfg = config_from_dict({"TLS": "off", "Notify": [cluster_entry(cluster, ks)]})
        asyncio.run(CassandraSink(cfg.notify[0], cfg).apply_schema())
        c = collector_factory({"Notify": [cluster_entry(cluster, ks, Critical=True, Driver=driver)],
                               "BatchMaxAgeMs": 50, "DrainTimeoutSeconds": 60},
                              workers=1, name=driver)
        stores[driver] = (ks, c)
    quorum = session(cluster)
    victim = cluster.nodes[1]
    loads = {d: Load(c, threads=2, pause=0.005, bad_every=0, big_every=0, prefix=d[0]).start()
             for d, (_, c) in stores.items()}

    def all_counts():
        return {d: count(quorum, f"{ks}.events") for d, (ks, _) in stores.items()}

    def each_wait_more(n):
        for load in loads.values():
            load.wait_more(n)
    try:
        each_wait_more(150)
        wait_until(lambda: min(all_counts().values()) > 100, 60, "events in the cluster")

        victim.kill()                                   # SIGKILL: a crashed node
        killed = time.monotonic()
        at_kill = all_counts()
        each_wait_more(300)
        # the cluster keeps taking writes with one node down: 2 replicas are a quorum
        wait_until(lambda: all(n > at_kill[d] + 150 for d, n in all_counts().items()), 60,
                   "writes while a node is down")
        for _, c in stores.values():
            assert c.get("/ready")[0] == 200            # a Critical store that still writes
        victim.start()
        back = time.monotonic()
        print(f"node {victim.address} down {back - killed:.1f} s, "
              f"restart took {victim.start_seconds:.1f} s")
        each_wait_more(150)
    finally:
        for load in loads.values():
            load.stop()
    rows = {d: check_driver(cluster, quorum, ks, c, loads[d], d)
            for d, (ks, c) in stores.items()}

    # the restarted node catches up by itself (hinted handoff): its own copy,
    # read at ONE from it alone, ends up holding every event
    alone = session(cluster, victim.address, "ONE")
    caught = wait_until(
        lambda: all(count(alone, f"{ks}.events") >= rows[d] for d, (ks, _) in stores.items())
        and time.monotonic(), 180, "the restarted node to hold every event", interval=1.0)
    print(f"the restarted node held every event {caught - back:.1f} s after its restart")
    quorum.cluster.shutdown()
    alone.cluster.shutdown()


def check_driver(cluster, quorum, ks, c, load, driver):
    """Every 2xx of ``load`` in ``ks`` once; counters exact unless in doubt.
    Returns the number of rows."""
    expected = len(load.ok)
    wait_until(lambda: count(quorum, f"{ks}.events") >= expected, 120,
               f"every 2xx stored ({driver})")
    assert c.stop() == 0
    logs = c.logs()
    assert "drain timed out" not in logs and "undelivered events stay" not in logs

    rows = list(quorum.execute(f"SELECT vid, params FROM {ks}.events"))
    load.check_stored([r.params["mk"] for r in rows], f"Cassandra ({driver})")   # once each
    print(f"{driver}: 2xx {expected}, no answer {len(load.unknown)}, stored {len(rows)}")

    want = collections.Counter(str(r.vid) for r in rows)
    reqs = {str(r.vid): r.total for r in quorum.execute(f"SELECT vid, total FROM {ks}.reqs")}
    doubt = counter_doubt(logs)
    print(f"{driver}: reqs total {sum(reqs.values())} for {len(rows)} events; counter "
          f"requests in doubt: {doubt or 'none'}")
    if not doubt:
        assert reqs == dict(want)
    else:      # at least once: never fewer, the same keys
        assert set(reqs) == set(want) and all(reqs[k] >= n for k, n in want.items())
    return len(rows)
