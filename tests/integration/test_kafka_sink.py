"""Publishing every tracked event to a real Kafka broker (Notify "kafka"),
and the documented topic schema, Druid spec and Flink table checked against
the messages this module's collector produced."""
import asyncio
import json
import os
import re
import time
import uuid

import pytest

from conftest import Collector, params_of, wait_for
from kafka_fixtures import (PLAIN_PASSWORD, PLAIN_USER, SCRAM_PASSWORD, SCRAM_USER,
                            events_of, read_topic, wait_topic)

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs", "kafka")
TOPIC = "tracker.events"            # the topic docs/kafka/* name
VIDS = [str(uuid.uuid4()) for _ in range(3)]
PER_VID = 30
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def kafka_notify(broker, **extra):
    entry = {"Service": "kafka", "Hosts": broker.hosts, "Topic": TOPIC, "Partitions": 3,
             "Critical": True}
    entry.update(extra)
    return entry


def send_all_fields(c):
    """Requests that fill every field an event can have, PER_VID per visitor,
    interleaved; ``n`` counts each visitor's events in sending order."""
    headers = {"User-Agent": UA, "Accept-Language": "fr-CH, fr;q=0.9"}
    for i in range(PER_VID):
        for k, vid in enumerate(VIDS):
            if (i + k) % 2:
                status = c.get(f"/tr/v1/vid/{vid}/sid/{vid}/ename/view/n/{i}/lat/37.5/lon/6.25"
                               f"/w/1280/h/720/duration/{i}/score/2.5?utm_source=news"
                               "&utm_medium=mail&utm_campaign=spring&utm_term=shoes"
                               "&utm_content=banner", headers)[0]
            else:
                status = c.post("/tr/v1/", {
                    "vid": vid, "first": "false", "n": i, "uid": f"u{k}", "app": "shop",
                    "last": "https://example.com/prev", "url": "https://example.com/page",
                    "ptype": "product", "auth": "a1", "xid": "x1", "split": "B",
                    "ename": "buy", "etyp": "conversion", "version": "7", "sink": "s",
                    "targets": "t", "source": "ads", "medium": "cpc", "campaign": "c",
                    "term": "q", "ref": "r", "aff": "partner", "device": "desktop",
                    "os": "linux", "tz": "Europe/Zurich", "outcome": "ok",
                    "username": "ann", "duration": 12.7, "score": 3,
                    "params": {"color": "red", "size": 42}}, headers)[0]
            assert status == 200
    status = c.get("/tr/v1/ename/hello", {"User-Agent": UA})[0]   # no vid: a new visitor
    assert status == 200
    return len(VIDS) * PER_VID + 1


@pytest.fixture(scope="module")
def produced(kafka_broker, tmp_path_factory):
    """The events one collector (1 HTTP worker: spool order = request order)
    published to TOPIC, as the broker holds them, with its SQLite rows."""
    directory = str(tmp_path_factory.mktemp("kafka_sink"))
    c = Collector(directory, {"Notify": [{"Service": "sqlite", "Path": "tracker.db",
                                          "Critical": True}, kafka_notify(kafka_broker)]},
                  workers=1)
    c.start()
    try:
        total = send_all_fields(c)
        messages = wait_topic(kafka_broker.bootstrap, TOPIC, lambda m: len(m) >= total,
                              what=f"{total} events")
        assert wait_for(lambda: len(c.rows("SELECT eid FROM events")) == total), c.logs()
        rows = c.rows("SELECT * FROM events")
        metrics = c.get("/metrics")[2].decode()
    finally:
        c.stop()
    return {"messages": messages, "events": events_of(messages), "rows": rows,
            "total": total, "metrics": metrics}


def iso_millis(ms):
    """The SQLite store's text for a ``created`` in ms."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def test_every_event_once_keyed_by_vid_with_eid_header(produced):
    messages, events, rows = produced["messages"], produced["events"], produced["rows"]
    assert len(messages) == produced["total"]                 # none twice, none missing
    assert {ev["eid"] for ev in events} == {r["eid"] for r in rows}
    by_eid = {ev["eid"]: ev for ev in events}
    for msg, ev in zip(messages, events):
        assert msg["key"] == ev["vid"]
        assert msg["headers"] == {"eid": ev["eid"]}
    for row in rows:                                          # the store's event, field by field
        ev = by_eid[row["eid"]]
        assert (ev["vid"], ev["sid"], iso_millis(ev["created"])) == \
            (row["vid"], row["sid"], row["created"])
        assert ev["params"] == params_of(row)
        assert ev.get("ename") == row["ename"] and ev.get("url") == row["url"]
    new = [ev for ev in events if ev.get("new_visitor")]
    assert len(new) == 1 and new[0]["vid"] not in VIDS and new[0]["ename"] == "hello"


def test_each_visitors_events_share_a_partition_in_sending_order(produced):
    for vid in VIDS:
        mine = [(m["partition"], m["offset"], json.loads(m["value"]))
                for m in produced["messages"] if m["key"] == vid]
        assert len(mine) == PER_VID
        assert len({p for p, _, _ in mine}) == 1
        mine.sort(key=lambda t: t[1])
        assert [int(ev["params"]["n"]) for _, _, ev in mine] == list(range(PER_VID))


def test_written_metric_counts_the_kafka_sink(produced):
    assert re.search(r'tracker_sink_events_written_total\{sink="kafka"\} (\d+)',
                     produced["metrics"]).group(1) == str(produced["total"])


# ---- the documented schema, Druid spec and Flink table ----------------------------
def json_kind(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return {float: "float", str: "str", list: "list", dict: "dict"}[type(value)]


def test_messages_match_the_json_schema(produced):
    from jsonschema import Draft202012Validator
    with open(os.path.join(DOCS, "event.schema.json")) as fh:
        schema = json.load(fh)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for ev in produced["events"]:
        problems = [e.message for e in validator.iter_errors(ev)]
        assert not problems, (ev, problems)
    seen = {key for ev in produced["events"] for key in ev}
    assert seen == set(schema["properties"])          # every documented field was produced


def created_parses_as_millis(events):
    now = time.time() * 1000
    for ev in events:
        assert json_kind(ev["created"]) == "int"
        assert now - 3600_000 < ev["created"] <= now + 1000   # ms since the epoch, just now


DRUID_ACCEPTS = {"string": {"str"}, "long": {"int", "bool"}, "double": {"int", "float"},
                 "float": {"int", "float"}, "json": {"dict", "list", "str", "int", "float"}}


def druid_source(name, flatten):
    """(field, index or None) the Druid column ``name`` reads."""
    for field in flatten:
        if field["name"] == name and field["type"] == "path":
            m = re.fullmatch(r"\$\.(\w+)\[(\d+)\]", field["expr"])
            assert m, field
            return m.group(1), int(m.group(2))
    return name, None


def test_druid_spec_parses_produced_messages(produced):
    with open(os.path.join(DOCS, "druid-spec.json")) as fh:
        spec = json.load(fh)["spec"]
    io, schema = spec["ioConfig"], spec["dataSchema"]
    assert io["topic"] == TOPIC and io["inputFormat"]["type"] == "json"
    assert schema["timestampSpec"] == {"column": "created", "format": "millis"}
    created_parses_as_millis(produced["events"])
    flatten = io["inputFormat"]["flattenSpec"]["fields"]
    read = {"created"}
    for dim in schema["dimensionsSpec"]["dimensions"]:
        dim = {"type": "string", "name": dim} if isinstance(dim, str) else dim
        field, index = druid_source(dim["name"], flatten)
        read.add(field)
        values = [ev[field] for ev in produced["events"] if field in ev]
        if index is not None:
            values = [v[index] for v in values]
        assert values, f"no produced message has {field} (Druid column {dim['name']})"
        kinds = {json_kind(v) for v in values}
        assert kinds <= DRUID_ACCEPTS[dim["type"]], (dim, kinds)
    assert {k for ev in produced["events"] for k in ev} <= read     # nothing dropped


FLINK_ACCEPTS = {"STRING": {"str"}, "BIGINT": {"int"}, "INT": {"int"},
                 "DOUBLE": {"int", "float"}, "BOOLEAN": {"bool"}}


def flink_columns(sql):
    """{physical column: type} of the CREATE TABLE, and its computed columns."""
    body = re.search(r"CREATE TABLE tracker_events \((.*?)\n\) WITH \((.*?)\);", sql, re.S)
    assert body, "no CREATE TABLE tracker_events (...) WITH (...);"
    physical, computed = {}, {}
    for line in body.group(1).strip().splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("WATERMARK FOR") or " METADATA FROM " in line:
            continue
        m = re.fullmatch(r"`(\w+)` AS (.+)", line)
        if m:
            computed[m.group(1)] = m.group(2)
            continue
        m = re.fullmatch(r"`(\w+)` ([A-Z]+(?:<[A-Z, ]+>)?)", line)
        assert m, f"unparsed column line: {line!r}"
        physical[m.group(1)] = m.group(2)
    options = dict(re.findall(r"'([^']+)' = '([^']*)'", body.group(2)))
    return physical, computed, options


def flink_accepts(sql_type, value):
    m = re.fullmatch(r"ARRAY<(\w+)>", sql_type)
    if m:
        return isinstance(value, list) and all(flink_accepts(m.group(1), v) for v in value)
    if sql_type == "MAP<STRING, STRING>":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    return json_kind(value) in FLINK_ACCEPTS[sql_type]


def test_flink_table_parses_produced_messages(produced):
    with open(os.path.join(DOCS, "flink.sql")) as fh:
        physical, computed, options = flink_columns(fh.read())
    assert options["connector"] == "kafka" and options["topic"] == TOPIC
    assert options["value.format"] == "json"
    assert computed["event_time"] == "TO_TIMESTAMP_LTZ(`created`, 3)"
    created_parses_as_millis(produced["events"])
    for name, sql_type in physical.items():
        values = [ev[name] for ev in produced["events"] if name in ev]
        assert values, f"no produced message has {name}"
        bad = [v for v in values if not flink_accepts(sql_type, v)]
        assert not bad, (name, sql_type, bad[:3])
    assert {k for ev in produced["events"] for k in ev} <= set(physical)


def test_docs_include_the_spec_files():
    with open(os.path.join(ROOT, "docs", "kafka.md")) as fh:
        doc = fh.read()
    for name in ("event.schema.json", "druid-spec.json", "flink.sql"):
        with open(os.path.join(DOCS, name)) as fh:
            assert fh.read().strip() in doc, f"docs/kafka.md does not show docs/kafka/{name}"


# ---- TLS, SASL, and refusals ---------------------------------------------------
def sink_round_trip(entry, n=5):
    """Start a KafkaSink for ``entry`` in this process, write ``n`` events; their eids."""
    from engine.config import config_from_dict
    from engine.store.sinks.kafka import KafkaSink
    cfg = config_from_dict({"Notify": [entry]})
    sink = KafkaSink(cfg.notify[0], cfg)
    now = int(time.time() * 1000)
    vid = str(uuid.uuid4())
    events = [{"eid": str(uuid.uuid1()), "vid": vid, "sid": vid, "created": now + i,
               "first": i == 0, "ip": "127.0.0.1", "params": {}} for i in range(n)]

    async def run():
        try:
            await sink.start()
            await sink.write_batch(events)
        finally:
            await sink.close()
    asyncio.run(run())
    return {ev["eid"] for ev in events}


def sasl_entry(broker, topic, **extra):
    entry = {"Service": "kafka", "Hosts": [broker.sasl_host], "Topic": topic, "Partitions": 1,
             "CACert": broker.ca_path, "Secure": True, "Username": PLAIN_USER,
             "Password": PLAIN_PASSWORD, "Timeout": 5000}
    entry.update(extra)
    return entry


@pytest.mark.parametrize("mechanism,user,password", [
    ("PLAIN", PLAIN_USER, PLAIN_PASSWORD), ("SCRAM-SHA-512", SCRAM_USER, SCRAM_PASSWORD)])
def test_sasl_over_verified_tls(kafka_broker, mechanism, user, password):
    topic = f"tls.{mechanism.lower()}"
    eids = sink_round_trip(sasl_entry(kafka_broker, topic, SASL=mechanism, Username=user,
                                      Password=password))
    messages = read_topic(kafka_broker.bootstrap, topic)          # read back in plain text
    assert {m["headers"]["eid"] for m in messages} == eids


def test_wrong_password_is_refused_with_a_clear_error(kafka_broker):
    from engine.store.sinks.base import SinkUnavailable
    with pytest.raises(SinkUnavailable, match="(?i)authentication"):
        sink_round_trip(sasl_entry(kafka_broker, "tls.refused", Password="wrong"))


def test_untrusted_broker_certificate_is_refused(kafka_broker):
    from engine.store.sinks.base import SinkUnavailable
    entry = sasl_entry(kafka_broker, "tls.refused")
    del entry["CACert"]                      # Secure: the system CAs, which do not know it
    with pytest.raises(SinkUnavailable, match="(?i)ssl|certificate"):
        sink_round_trip(entry)


def start_expecting_exit(tmp_path, entry):
    c = Collector(str(tmp_path), {"Notify": [entry]}, workers=1)
    c.start(wait=False)
    code = c.proc.wait(60)
    return code, c.logs()


def test_critical_sink_without_a_broker_refuses_to_start(tmp_path):
    from conftest import free_port
    code, logs = start_expecting_exit(tmp_path, {
        "Service": "kafka", "Hosts": [f"127.0.0.1:{free_port()}"], "Topic": "t",
        "Critical": True, "Timeout": 1000})
    assert code == 3, logs
    assert "critical sink kafka unavailable" in logs and "answered within 1 s" in logs


def test_missing_topic_without_partitions_refuses_to_start(kafka_broker, tmp_path):
    code, logs = start_expecting_exit(tmp_path, {
        "Service": "kafka", "Hosts": kafka_broker.hosts, "Topic": "never.created",
        "Critical": True})
    assert code == 3, logs
    assert "topic 'never.created' does not exist" in logs


def test_broker_down_events_wait_in_the_spool_then_arrive(kafka_broker, tmp_path):
    """Runs last: it stops the session's broker and starts it again."""
    topic = "spool.wait"
    sink_round_trip(kafka_notify(kafka_broker, Topic=topic))          # create the topic
    c = Collector(str(tmp_path), {"Notify": [kafka_notify(kafka_broker, Topic=topic,
                                                          Timeout=2000, Critical=False)]},
                  workers=1)
    c.start()
    node = kafka_broker.nodes[0]
    node.stop()
    try:
        for i in range(50):
            assert c.get(f"/tr/v1/ename/down/n/{i}")[0] == 200
        assert wait_for(lambda: "sink write failed; batch kept for retry" in c.logs(), 30)
    finally:
        node.start()

    def kept(messages):
        return {ev["eid"]: ev for ev in events_of(messages) if ev.get("ename") == "down"}
    try:
        messages = wait_topic(kafka_broker.bootstrap, topic, lambda m: len(kept(m)) >= 50,
                              what="the 50 kept events")
    except AssertionError:
        raise AssertionError(c.logs()[-6000:]) from None
    assert sorted(int(ev["params"]["n"]) for ev in kept(messages).values()) == list(range(50))
    c.stop()
