"""``tracker repeat`` between a real nats-server (JetStream) and the session's
Kafka broker: killed mid-stream and resumed, every event arrives downstream
exactly once by eid; nothing is committed at the source before the target
acknowledged it."""
import json
import os
import signal
import subprocess
import time
import uuid

import orjson
import pytest

from conftest import TRACKER
from kafka_fixtures import committed_offsets, read_topic, wait_topic
from natsserver import nats_factory, needs_nats, wait_until  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, needs_nats]

BATCH = 200


def make_events(n):
    now = int(time.time() * 1000)
    vids = [str(uuid.uuid4()) for _ in range(20)]
    return [{"eid": str(uuid.uuid1()), "vid": vids[i % 20], "sid": vids[i % 20],
             "created": now + i, "first": False, "ip": "127.0.0.1", "ename": "rep",
             "params": {"n": str(i)}} for i in range(n)]


class Repeat:
    """One ``tracker repeat`` process; its log in ``directory``."""

    def __init__(self, directory, *args):
        self.log_path = os.path.join(directory, f"repeat-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([TRACKER, "repeat", "--batch", str(BATCH), *args],
                                     stdout=self.log, stderr=self.log)

    def logs(self):
        with open(self.log_path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")

    def summary(self):
        for line in reversed(self.logs().splitlines()):
            if '"msg":"repeat stopped"' in line:
                return json.loads(line)
        raise AssertionError("no summary:\n" + self.logs())

    def wait(self, timeout=120):
        code = self.proc.wait(timeout)
        self.log.close()
        return code

    def kill(self):
        self.proc.kill()          # SIGKILL: no goodbye, nothing flushed
        return self.wait()


def jetstream_with(nats_factory, stream, subject):
    """A fresh JetStream server holding ``stream`` on ``subject``: (server, client, js)."""
    from nats.js.api import StreamConfig
    server = nats_factory(jetstream=True).start()
    client = nats_factory.client(server.url)
    js = client.jetstream()
    client.call(js.add_stream(StreamConfig(name=stream, subjects=[subject])))
    return server, client, js


def test_usage_errors_are_clear_and_start_nothing():
    run = subprocess.run([TRACKER, "repeat", "--from", "nats:a.*", "--to", "kafka:t",
                          "--nats-hosts", "127.0.0.1:1", "--kafka-hosts", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "without wildcards" in run.stderr
    run = subprocess.run([TRACKER, "repeat", "--from", "kafka:a", "--to", "kafka:b",
                          "--kafka-hosts", "127.0.0.1:1"], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 2 and "one side must be nats" in run.stderr


def test_nats_to_kafka_killed_and_resumed_delivers_each_event_once_by_eid(
        kafka_broker, nats_factory, tmp_path):
    server, client, js = jetstream_with(nats_factory, "TRACK", "tic.track")
    events = make_events(4000)
    bad = [b"oops", b"[1, 2]", orjson.dumps({"vid": "v", "ename": "no eid"})]

    def publish(batch, junk=()):
        async def pub():
            for i, ev in enumerate(batch):
                await js.publish("tic.track", orjson.dumps(ev), headers={
                    "Nats-Msg-Id": ev["eid"]})
                if i == 100:
                    for payload in junk:
                        await js.publish("tic.track", payload)
        client.call(pub(), timeout=120)
    publish(events[:3000], bad)
    args = ["--from", "nats:tic.track", "--to", "kafka:rep.out", "--partitions", "3",
            "--nats-hosts", server.host, "--kafka-hosts", kafka_broker.bootstrap,
            "--ack-wait", "2"]
    first = Repeat(str(tmp_path), *args)
    wait_topic(kafka_broker.bootstrap, "rep.out", lambda m: len(m) >= 1000,
               what="a third of the events")
    first.kill()
    publish(events[3000:])                        # more while no repeater runs
    second = Repeat(str(tmp_path), *args, "--stop-when-idle", "3")
    assert second.wait() == 0, second.logs()

    messages = read_topic(kafka_broker.bootstrap, "rep.out")
    eids = [m["headers"]["eid"] for m in messages]
    assert set(eids) == {ev["eid"] for ev in events}          # each one, none other
    for m in messages:
        body = json.loads(m["value"])
        assert m["key"] == body["vid"] and m["headers"]["eid"] == body["eid"]
    duplicates = len(eids) - len(set(eids))
    assert duplicates <= BATCH                    # at most the group in flight at the kill
    info = client.call(js.consumer_info("TRACK", "tracker-repeat"))
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert info.ack_floor.stream_seq == 4000 + len(bad)       # all committed
    logs = first.logs() + second.logs()
    for reason in ("not JSON", "not a JSON object", "no eid (header or field)"):
        assert f'"reason":"{reason}"' in logs
    print(f"nats -> kafka: killed after >= 1000, resumed: 4000 events once by eid, "
          f"{duplicates} duplicates (bound {BATCH}); summary {second.summary()}")


def publish_events(client, js, subject, events):
    async def pub():
        for ev in events:
            await js.publish(subject, orjson.dumps(ev), headers={"Nats-Msg-Id": ev["eid"]})
    client.call(pub(), timeout=60)


def take_and_drop(client, js, subject, stream, n, ack_first=0):
    """What a repeater killed with a group in hand leaves: fetch ``n``
    messages on the repeater's durable (as it exists), acknowledge the first
    ``ack_first`` of them (synchronously, the last of those), then let the
    rest hang: no ack, no "in progress"."""
    async def take():
        sub = await js.pull_subscribe(subject, durable="tracker-repeat", stream=stream)
        msgs = await sub.fetch(n, timeout=5)
        assert len(msgs) == n
        if ack_first:
            await msgs[ack_first - 1].ack_sync()
        return [m.headers["Nats-Msg-Id"] for m in msgs]
    return client.call(take())


def test_a_group_a_killed_repeater_held_short_of_the_batch_is_delivered_by_the_next(
        kafka_broker, nats_factory, tmp_path):
    # The group is smaller than the batch, so JetStream hands the next
    # repeater newer messages at once. With AckAll, acking those also acked
    # the dead group and its events never reached Kafka.
    from nats.js.api import AckPolicy
    server, client, js = jetstream_with(nats_factory, "SHORT", "tic.short")
    args = ["--from", "nats:tic.short", "--to", "kafka:rep.short", "--partitions", "1",
            "--nats-hosts", server.host, "--kafka-hosts", kafka_broker.bootstrap, "--ack-wait", "2"]
    maker = Repeat(str(tmp_path), *args, "--stop-when-idle", "1")   # makes the durable
    assert maker.wait() == 0, maker.logs()
    info = client.call(js.consumer_info("SHORT", "tracker-repeat"))
    assert info.config.ack_policy == AckPolicy.EXPLICIT
    events = make_events(30)
    publish_events(client, js, "tic.short", events[:10])
    held = take_and_drop(client, js, "tic.short", "SHORT", 10)
    assert held == [ev["eid"] for ev in events[:10]]
    publish_events(client, js, "tic.short", events[10:])
    second = Repeat(str(tmp_path), *args, "--stop-when-idle", "5")
    assert second.wait() == 0, second.logs()
    eids = [m["headers"]["eid"] for m in read_topic(kafka_broker.bootstrap, "rep.short")]
    assert sorted(eids) == sorted(ev["eid"] for ev in events)  # the held ten too, once each
    info = client.call(js.consumer_info("SHORT", "tracker-repeat"))
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert info.ack_floor.stream_seq == 30


def test_a_durable_an_earlier_version_made_with_ack_all_resumes_at_its_floor(
        kafka_broker, nats_factory, tmp_path):
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    server, client, js = jetstream_with(nats_factory, "OLD", "tic.old")
    client.call(js.add_consumer("OLD", ConsumerConfig(                  # as the old version did
        durable_name="tracker-repeat", ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.ALL,
        filter_subject="tic.old", max_ack_pending=BATCH, ack_wait=2)))
    events = make_events(20)
    publish_events(client, js, "tic.old", events)
    take_and_drop(client, js, "tic.old", "OLD", 8, ack_first=5)   # 1-5 done, 6-8 in doubt
    run = Repeat(str(tmp_path), "--from", "nats:tic.old", "--to", "kafka:rep.old", "--partitions", "1",
                 "--nats-hosts", server.host, "--kafka-hosts", kafka_broker.bootstrap,
                 "--ack-wait", "2", "--stop-when-idle", "3")
    assert run.wait() == 0, run.logs()
    warning = next(json.loads(line) for line in run.logs().splitlines()
                   if "recreating it with explicit acks" in line)
    assert warning["ack_policy"] == "all" and warning["resume_at_sequence"] == 6
    eids = [m["headers"]["eid"] for m in read_topic(kafka_broker.bootstrap, "rep.old")]
    assert sorted(eids) == sorted(ev["eid"] for ev in events[5:])   # from the floor on, once
    info = client.call(js.consumer_info("OLD", "tracker-repeat"))
    assert info.config.ack_policy == AckPolicy.EXPLICIT
    assert info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.stream_seq == 20


def produce(bootstrap, topic, events):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})    # alive until the answer
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for ev in events:
        producer.produce(topic, orjson.dumps(ev), ev["vid"].encode(),
                         headers=[("eid", ev["eid"].encode())])
        producer.poll(0)
    assert producer.flush(30) == 0


def stream_eids(client, js, stream):
    info = client.call(js.stream_info(stream))
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = client.call(js.get_msg(stream, seq))
        found.append(json.loads(msg.data)["eid"])
        assert msg.headers["Nats-Msg-Id"] == found[-1]
    return found


def committed_total(bootstrap, topic, group):
    return sum(max(c, 0) for c, _ in committed_offsets(bootstrap, topic, group).values())


def test_kafka_to_nats_killed_and_resumed_stores_each_event_once(
        kafka_broker, nats_factory, tmp_path):
    events = make_events(3000)
    produce(kafka_broker.bootstrap, "rep.in", events)
    server = nats_factory(jetstream=True).start()
    client = nats_factory.client(server.url)
    js = client.jetstream()
    args = ["--from", "kafka:rep.in", "--to", "nats:tic.back", "--stream", "BACK",
            "--group", "rep-test", "--nats-hosts", server.host,
            "--kafka-hosts", kafka_broker.bootstrap]
    first = Repeat(str(tmp_path), *args)

    def stored():
        try:
            return client.call(js.stream_info("BACK")).state.messages
        except Exception:
            return 0
    wait_until(lambda: stored() >= 800, timeout=60, what="800 events in BACK")
    first.kill()
    # committed only what the stream acknowledged
    assert committed_total(kafka_broker.bootstrap, "rep.in", "rep-test") <= stored()
    second = Repeat(str(tmp_path), *args, "--stop-when-idle", "3")
    assert second.wait() == 0, second.logs()

    eids = stream_eids(client, js, "BACK")
    assert len(eids) == len(set(eids)) == 3000                # exactly once in the stream
    assert set(eids) == {ev["eid"] for ev in events}
    offsets = committed_offsets(kafka_broker.bootstrap, "rep.in", "rep-test")
    # every partition read to its end; one the producer left empty (high
    # watermark 0) has nothing to commit and keeps "no offset" (negative)
    assert all(committed == high or (high == 0 and committed < 0)
               for committed, high in offsets.values()), offsets
    assert sum(high for _, high in offsets.values()) == 3000
    print(f"kafka -> nats: killed after >= 800, resumed: 3000 events once in the stream; "
          f"summary {second.summary()}")


def test_kafka_to_nats_waits_while_nats_is_down_and_commits_nothing(
        kafka_broker, nats_factory, tmp_path):
    events = make_events(2000)
    produce(kafka_broker.bootstrap, "rep.down", events)
    server = nats_factory(jetstream=True).start()
    client = nats_factory.client(server.url)
    js = client.jetstream()
    rep = Repeat(str(tmp_path), "--from", "kafka:rep.down", "--to", "nats:tic.down",
                 "--stream", "DOWN", "--group", "rep-down", "--nats-hosts", server.host,
                 "--kafka-hosts", kafka_broker.bootstrap)
    wait_until(lambda: client.call(js.stream_info("DOWN")).state.messages >= 400
               if "repeat target ready" in rep.logs() else False, timeout=60,
               what="400 events in DOWN")
    server.kill()
    wait_until(lambda: "repeat target failed; group kept for retry" in rep.logs(),
               timeout=30, what="the repeater to notice")
    before = committed_total(kafka_broker.bootstrap, "rep.down", "rep-down")
    time.sleep(2)
    assert committed_total(kafka_broker.bootstrap, "rep.down", "rep-down") == before
    assert before < 2000
    server.start()                                # same store: the stream is still there
    client = nats_factory.client(server.url)
    js = client.jetstream()
    wait_until(lambda: client.call(js.stream_info("DOWN")).state.messages >= 2000,
               timeout=60, what="all 2000 events in DOWN")
    rep.proc.send_signal(signal.SIGTERM)
    assert rep.wait() == 0, rep.logs()
    eids = stream_eids(client, js, "DOWN")
    assert len(eids) == len(set(eids)) == 2000
    summary = rep.summary()
    assert summary["received"] >= 2000 and summary["malformed"] == 0
