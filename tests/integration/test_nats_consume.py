"""The consumer process: NATS log/count/update messages into the SQLite store."""
import json
import os
import re
import signal
import uuid

import pytest

from natsserver import nats_factory, needs_nats, wait_until  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, needs_nats]


def consume_config(server, **extra):
    entry = {"Service": "nats", "Hosts": [server.host], "MessageLimit": 10000,
             "BytesLimit": 8 * 1024 * 1024}
    entry.update(extra)
    return {"Consume": [entry]}


def consumer_pids(collector):
    """Children of the supervisor titled tracker: consume-0 (and logging as it)."""
    pids = set(int(p) for p in re.findall(r'"pid":(\d+),"role":"consume-0"', collector.logs()))
    return sorted(p for p in pids if p in collector.pids_of("consume"))


def counter(collector, cid):
    rows = collector.rows("SELECT total FROM counters WHERE id = ?", cid)
    return rows[0]["total"] if rows else 0


def metric(collector, name, **labels):
    text = collector.get("/metrics")[2].decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(re.escape(f"{name}{{{want}}}") + r" ([0-9.e+]+)", text)
    return float(m.group(1)) if m else 0.0


def test_log_count_update_messages_land_in_sqlite(nats_factory, collector_factory):
    server = nats_factory().start()
    c = collector_factory(consume_config(server), workers=1)
    wait_until(lambda: len(consumer_pids(c)) == 1, what="the consumer process")
    wait_until(lambda: any(n.startswith("tracker-consume") for n in server.client_names()),
               what="the consumer connected")
    pub = nats_factory.client(server.url)
    log_id = str(uuid.uuid4())
    pub.publish("tic.log.api", [json.dumps({
        "id": log_id, "name": "api", "host": "h1", "hostname": "box", "owner": "ops",
        "ip": "10.0.0.7", "level": 3, "msg": "disk almost full", "created": 1764285326123,
        "params": {"disk": "/var"}, "extra": 5}).encode()])
    pub.publish("tic.log.web", [json.dumps({"msg": "plain", "level": "2"}).encode()])
    pub.publish("tic.count.signup", [b'{"id": "signups"}'] * 250 + [b'{"id": "logins"}'] * 3)
    pub.publish("tic.update.cfg", [
        json.dumps({"id": "cfg", "msg": "v2", "updated": 2000, "params": {"k": "2"}}).encode(),
        json.dumps({"id": "cfg", "msg": "v1", "updated": 1000}).encode(),   # older: loses
        json.dumps({"id": "feature", "msg": "on"}).encode()])

    wait_until(lambda: counter(c, "signups") == 250 and counter(c, "logins") == 3
               and len(c.rows("SELECT * FROM logs")) == 2
               and len(c.rows("SELECT * FROM updates")) == 2, what="all messages stored")
    logs = {r["msg"]: r for r in c.rows("SELECT * FROM logs")}
    full = logs["disk almost full"]
    assert full["id"] == log_id and full["name"] == "api" and full["host"] == "h1"
    assert full["hostname"] == "box" and full["owner"] == "ops" and full["ip"] == "10.0.0.7"
    assert full["level"] == 3 and full["ldate"] == "2025-11-27"
    assert full["created"] == "2025-11-27T23:15:26.123Z"
    assert full["ltime"] == 1764285326123 * 1_000_000
    assert json.loads(full["params"]) == {"disk": "/var", "extra": "5"}
    assert logs["plain"]["level"] == 2
    updates = {r["id"]: r for r in c.rows("SELECT * FROM updates")}
    assert updates["cfg"]["msg"] == "v2" and json.loads(updates["cfg"]["params"]) == {"k": "2"}
    assert updates["feature"]["msg"] == "on"
    wait_until(lambda: metric(c, "tracker_nats_messages_total", alias="count",
                              result="accepted") == 253, what="accepted count metric")

    # a redelivered log message with the same id and time is the same row
    pub.publish("tic.log.api", [json.dumps({"id": log_id, "msg": "disk almost full",
                                            "created": 1764285326123}).encode()])
    pub.publish("tic.count.signup", [b'{"id": "signups"}'])
    wait_until(lambda: counter(c, "signups") == 251, what="one more signup")
    assert len(c.rows("SELECT * FROM logs")) == 2
    assert c.stop() == 0


def test_malformed_messages_are_counted_and_logged_consumer_survives(nats_factory,
                                                                     collector_factory):
    server = nats_factory().start()
    c = collector_factory(consume_config(server), workers=1)
    wait_until(lambda: any(n.startswith("tracker-consume") for n in server.client_names()),
               what="the consumer connected")
    pid = consumer_pids(c)
    pub = nats_factory.client(server.url)
    pub.publish("tic.count.x", [b"not json", b"[1, 2]", b'{"name": "no id"}', b'{"id": ""}',
                                b'{"id": 5}'])
    pub.publish("tic.log.x", [b"\xff\xfe", b'{"level": "high"}', b'{"created": "yesterday"}',
                              b'{"params": [1]}'])
    pub.publish("tic.update.x", [b'{"msg": "no id"}', b"null"])
    pub.publish("tic.count.x", [b'{"id": "after"}'])        # still consuming
    wait_until(lambda: counter(c, "after") == 1, what="a valid message after bad ones")
    wait_until(lambda: metric(c, "tracker_nats_messages_total", alias="count",
                              result="malformed") == 5
               and metric(c, "tracker_nats_messages_total", alias="log",
                          result="malformed") == 4
               and metric(c, "tracker_nats_messages_total", alias="update",
                          result="malformed") == 2, what="malformed metrics 5/4/2")
    assert consumer_pids(c) == pid                       # the same process survived
    logged = [json.loads(line) for line in c.logs().splitlines()
              if '"malformed nats message; skipped"' in line]
    assert len(logged) == 11
    reasons = {entry["reason"] for entry in logged}
    assert "not JSON" in reasons and "id: expected the counter name as non-empty text" in reasons
    assert counter(c, "x") == 0 and not c.rows("SELECT * FROM logs")


def test_queue_group_shares_messages_and_consumer_is_respawned(nats_factory,
                                                               collector_factory):
    server = nats_factory().start()
    a = collector_factory(consume_config(server), workers=1, name="a")
    b = collector_factory(consume_config(server), workers=1, name="b")
    wait_until(lambda: sum(n.startswith("tracker-consume") for n in server.client_names())
               == 2, what="two consumers connected")
    pub = nats_factory.client(server.url)
    pub.publish("tic.count.hits", [b'{"id": "hits"}'] * 400)
    wait_until(lambda: counter(a, "hits") + counter(b, "hits") == 400,
               what="400 hits over both collectors")
    # queue group "tracker": each message went to exactly one collector
    assert counter(a, "hits") + counter(b, "hits") == 400

    # a killed consumer is respawned by the supervisor and consumes again
    [old] = consumer_pids(a)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: consumer_pids(a) and consumer_pids(a) != [old],
               what="a new consumer process")
    wait_until(lambda: sum(n.startswith("tracker-consume") for n in server.client_names())
               == 2, what="the new consumer connected")
    b.stop()
    wait_until(lambda: sum(n.startswith("tracker-consume") for n in server.client_names())
               == 1, what="only a's consumer left")
    pub.publish("tic.count.hits", [b'{"id": "hits"}'] * 10)
    wait_until(lambda: counter(a, "hits") + counter(b, "hits") == 410,
               what="the respawned consumer writes")
    assert a.get("/ping")[0] == 200


def test_consume_config_errors_are_reported(tmp_path, collector_factory):
    c = collector_factory({"Consume": [{"Service": "nats", "Hosts": [],
                                        "Filter": [{"Alias": "logs", "Id": "tic.log.>"}],
                                        "MessageLimit": 0}]}, start=False)
    c.start(wait=False)
    assert c.proc.wait(20) == 2
    logs = c.logs()
    assert "Consume[0].Hosts" in logs and "Consume[0].Filter[0]" in logs
    assert "Consume[0].MessageLimit" in logs
