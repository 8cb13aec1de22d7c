"""A two-node nats-server cluster (routes on loopback): the node the collector
is connected to is killed; the collector reconnects to the other node and,
in JetStream mode, no acknowledged event is missing.

Determinism: a two-node cluster has no JetStream quorum once a node dies, so
the stream is R1 and placed (by server tag) on the node the collector is NOT
connected to — the node that stays up. Which node the collector picked is
read from the servers' /connz, so the test holds whichever host it chose.
"""
import json

import pytest

from conftest import free_port
from natsserver import NatsServer, nats_factory, needs_nats, wait_until  # noqa: F401

pytestmark = [pytest.mark.integration, needs_nats]


def start_cluster(nats_factory, jetstream):
    ports = {"a": free_port(), "b": free_port()}
    nodes = {}
    for name, other in (("a", "b"), ("b", "a")):
        nodes[name] = nats_factory(name=name, jetstream=jetstream, tags=[name], cluster={
            "name": "tracker-test", "port": ports[name], "routes": [ports[other]]}).start()
    for node in nodes.values():
        wait_until(lambda n=node: (n.monitor("routez") or {}).get("num_routes", 0) >= 1,
                   what=f"route on node {node.name}")
    if jetstream:
        wait_until(lambda: all(((n.monitor("jsz") or {}).get("meta_cluster") or {})
                               .get("leader") for n in nodes.values()),
                   timeout=20, what="a JetStream meta leader")
    return nodes


def connected_node(nodes, prefix):
    found = [n for n in nodes.values()
             if any(c.startswith(prefix) for c in n.client_names())]
    return found[0] if len(found) == 1 else None


def send(collector, n, tag):
    for i in range(n):
        status = collector.get(f"/tr/v1/ename/{tag}/n/{i}")[0]
        assert status == 200


def test_jetstream_no_acknowledged_event_missing_after_node_kill(nats_factory,
                                                               collector_factory):
    from nats.js.api import Placement, StorageType, StreamConfig
    nodes = start_cluster(nats_factory, jetstream=True)
    c = collector_factory({"Notify": [
        {"Service": "sqlite", "Path": "tracker.db", "Critical": True},
        {"Service": "nats", "Hosts": [nodes["a"].host, nodes["b"].host],
         "Context": "tic.track", "JetStream": True, "Timeout": 1000, "Critical": True}]},
        workers=1)
    [store] = c.store_pids()                  # the NATS sink publishes from the store process
    name = f"tracker-{store}"
    doomed = wait_until(lambda: connected_node(nodes, name), what="the collector's node")
    keeper = nodes["b" if doomed.name == "a" else "a"]
    client = nats_factory.client(keeper.url)
    js = client.jetstream()
    client.call(js.add_stream(StreamConfig(
        name="EVENTS", subjects=["tic.track"], num_replicas=1, storage=StorageType.FILE,
        placement=Placement(tags=[keeper.name]))))

    def in_stream():
        try:
            return client.call(js.stream_info("EVENTS")).state.messages
        except Exception:
            return -1
    send(c, 100, "before")
    wait_until(lambda: in_stream() == 100, what="100 events in the stream")

    doomed.kill()
    send(c, 150, "after")          # every one answered 200: acknowledged
    wait_until(lambda: name in keeper.client_names(), what="the collector on the other node")
    assert '"nats reconnected"' in c.logs()
    wait_until(lambda: in_stream() >= 250, timeout=30, what="all 250 events in the stream")
    assert in_stream() == 250                     # none twice (Nats-Msg-Id de-duplication)

    # The sinks write independently: the SQLite sink holds a batch up to 1 s
    # (BATCH_AGE_MS, engine/store/sinks/sqlite.py), so the stream may hold the
    # last events before the file does.
    wait_until(lambda: len(c.rows("SELECT eid FROM events")) >= 250, timeout=30,
               what="all 250 events in SQLite")
    stored = {r["eid"] for r in c.rows("SELECT eid FROM events")}
    assert len(stored) == 250
    streamed = set()
    for seq in range(1, 251):
        msg = client.call(js.get_msg("EVENTS", seq))
        streamed.add(json.loads(msg.data)["eid"])
    assert streamed == stored                     # no acknowledged event is missing
    assert c.stop() == 0


def test_core_mode_reconnects_to_the_other_node(nats_factory, collector_factory):
    nodes = start_cluster(nats_factory, jetstream=False)
    c = collector_factory({"Notify": [
        {"Service": "sqlite", "Path": "tracker.db", "Critical": True},
        {"Service": "nats", "Hosts": [nodes["a"].host, nodes["b"].host],
         "Context": "tic.track", "Timeout": 1000}]}, workers=1)
    [store] = c.store_pids()                  # the NATS sink publishes from the store process
    name = f"tracker-{store}"
    doomed = wait_until(lambda: connected_node(nodes, name), what="the collector's node")
    keeper = nodes["b" if doomed.name == "a" else "a"]
    sub = nats_factory.client(keeper.url)
    received = sub.subscribe("tic.track")
    # the subscription must have reached the collector's node over the route
    wait_until(lambda: (doomed.monitor("subsz") or {}).get("num_subscriptions", 0) >= 1,
               what="the subscription propagated")
    send(c, 20, "before")
    wait_until(lambda: len(received) == 20, what="20 events via the route")
    doomed.kill()
    wait_until(lambda: name in keeper.client_names(), what="the collector on the other node")
    # core NATS is at-most-once across the kill; events sent once the collector
    # is connected again must all arrive
    send(c, 30, "after")
    wait_until(lambda: sum(json.loads(m.data)["ename"] == "after" for m in received) == 30,
               what="the 30 events after the reconnect")
