"""A 3-node Kafka cluster (KRaft, every node broker and controller voter) with
a broker killed (SIGKILL) mid-stream: no acknowledged event is lost.

The topic has 3 replicas and min.insync.replicas 2 and the producer asks for
acks=all, so an acknowledged message is on two brokers at least; the killed
broker's partitions get new leaders and the producer carries on there."""
import asyncio
import threading
import time
import uuid

import pytest

from conftest import Collector
from kafka_fixtures import events_of, kafka_cluster3, read_topic, wait_topic  # noqa: F401

pytestmark = pytest.mark.integration


def leaders(cluster, topic):
    from confluent_kafka.admin import AdminClient
    meta = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic, timeout=20)
    return {p: part.leader for p, part in meta.topics[topic].partitions.items()}


def entry(cluster, topic, **extra):
    found = {"Service": "kafka", "Hosts": cluster.hosts, "Topic": topic, "Partitions": 3,
             "Replicas": 3, "Timeout": 10000}
    found.update(extra)
    return found


def events(n):
    now = int(time.time() * 1000)
    vids = [str(uuid.uuid4()) for _ in range(16)]
    return [{"eid": str(uuid.uuid1()), "vid": vids[i % 16], "sid": vids[i % 16],
             "created": now + i, "first": False, "ip": "127.0.0.1", "ename": "kill",
             "params": {"n": str(i)}} for i in range(n)]


def test_sink_loses_no_acknowledged_event_when_a_leader_is_killed(kafka_cluster3):
    from engine.config import config_from_dict
    from engine.store.sinks.kafka import KafkaSink
    topic = "kill.sink"
    cfg = config_from_dict({"Notify": [entry(kafka_cluster3, topic)]})
    sink = KafkaSink(cfg.notify[0], cfg)
    batches = [events(250) for _ in range(40)]
    acked, failures, slowest = set(), 0, 0.0

    async def run():
        nonlocal failures, slowest
        await sink.start()
        try:
            for i, batch in enumerate(batches):
                if i == 8:            # mid-stream: kill the broker leading partition 0
                    victim = leaders(kafka_cluster3, topic)[0]
                    kafka_cluster3.nodes[victim - 1].kill()
                started = time.monotonic()
                while True:           # as the SinkChannel does: the same batch again
                    try:
                        await sink.write_batch(batch)
                        break
                    except Exception:
                        failures += 1
                        assert time.monotonic() - started < 60, "no recovery in 60 s"
                        await asyncio.sleep(0.2)
                slowest = max(slowest, time.monotonic() - started)
                acked.update(ev["eid"] for ev in batch)
        finally:
            await sink.close()
        return victim

    victim = asyncio.run(run())
    after = leaders(kafka_cluster3, topic)
    assert victim not in after.values()                   # its partitions moved
    stored = [m["headers"]["eid"] for m in read_topic(kafka_cluster3.bootstrap, topic)]
    assert acked <= set(stored)                             # every acknowledged event
    assert len(acked) == 40 * 250
    print(f"killed broker {victim}; 10000 events acknowledged, all stored; "
          f"{len(stored) - len(set(stored))} duplicates, {failures} batch retries, "
          f"slowest batch {slowest:.1f} s")
    kafka_cluster3.nodes[victim - 1].start()            # whole again for the next test


def test_collector_loses_no_answered_event_when_a_broker_is_killed(kafka_cluster3, tmp_path):
    topic = "kill.serve"
    c = Collector(str(tmp_path), {"Notify": [entry(kafka_cluster3, topic, Critical=True)]},
                  workers=2)
    c.start()
    answered, total = [], 1200
    half = threading.Event()

    def load():
        for i in range(total):
            if c.get(f"/tr/v1/ename/serve/m/{i}")[0] == 200:
                answered.append(i)
            if i == total // 3:
                half.set()
    thread = threading.Thread(target=load)
    thread.start()
    try:
        assert half.wait(120)
        victim = leaders(kafka_cluster3, topic)[1]
        kafka_cluster3.nodes[victim - 1].kill()
        thread.join(300)
        assert len(answered) == total             # the spool answers whatever Kafka does

        def markers(messages):
            return {int(ev["params"]["m"]) for ev in events_of(messages)}
        messages = wait_topic(kafka_cluster3.bootstrap, topic,
                              lambda m: markers(m) >= set(answered), timeout=120,
                              what="every answered event")
    finally:
        c.stop()
    eids = [m["headers"]["eid"] for m in messages]
    assert markers(messages) == set(answered)
    print(f"killed broker {victim} a third into {total} requests: every answered event "
          f"stored, {len(eids) - len(set(eids))} duplicates")
