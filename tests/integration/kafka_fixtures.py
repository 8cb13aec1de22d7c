"""Real Kafka brokers for integration tests (scripts/kafka_node.py: KRaft,
jars from Maven Central cached under ~/.cache/tracker, loopback ports).

- ``kafka_broker`` (session): one node, shared by every Kafka test module
  (conftest.py imports it). Besides PLAINTEXT it has a SASL_SSL listener
  (``.sasl_host``): a certificate from a test CA (``.ca_path``), SASL PLAIN
  user ``tracker``/``tracker-secret`` and SCRAM-SHA-512 user
  ``scram-user``/``scram-secret``.
- ``kafka_cluster3`` (module): three nodes, each broker and controller voter;
  topics get 3 replicas and min.insync.replicas 2.

Without a JDK and Maven the brokers cannot start and the tests FAIL (they do
not skip): CI must provide them (scripts/test installs and pre-resolves).
"""
import importlib.util
import json
import os
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAIN_USER, PLAIN_PASSWORD = "tracker", "tracker-secret"
SCRAM_USER, SCRAM_PASSWORD = "scram-user", "scram-secret"


def node_module():
    spec = importlib.util.spec_from_file_location(
        "kafka_node", os.path.join(ROOT, "scripts", "kafka_node.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_tls(directory):
    from tlshelpers import MiniCA
    ca = MiniCA("tracker kafka test CA")
    cert, key = ca.issue(names=("localhost",), ips=("127.0.0.1",))
    ca_path = os.path.join(directory, "ca.pem")
    pem_path = os.path.join(directory, "broker.pem")     # Kafka's PEM keystore: key + chain
    with open(ca_path, "wb") as fh:
        fh.write(ca.pem)
    with open(pem_path, "wb") as fh:
        fh.write(key + cert)
    return ca_path, pem_path


def _sasl_ssl_properties(pem_path):
    plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
             f'user_{PLAIN_USER}="{PLAIN_PASSWORD}";')
    return {
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": pem_path,
    }


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("kafka_broker"))
    ca_path, pem_path = _write_tls(directory)
    sasl_port = node_module().free_port()
    cluster = node_module().KafkaCluster(
        os.path.join(directory, "cluster"), size=1,
        extra=lambda _id: _sasl_ssl_properties(pem_path),
        listeners=lambda _id: {"SASL_SSL": sasl_port},
        scram=[f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"])
    cluster.start()
    cluster.sasl_host = f"127.0.0.1:{sasl_port}"
    cluster.ca_path = ca_path
    print(f"kafka broker up in {cluster.start_seconds:.1f} s on {cluster.bootstrap}")
    yield cluster
    cluster.stop(kill=True)


@pytest.fixture(scope="module")
def kafka_cluster3(tmp_path_factory, request):
    mod = node_module()
    for attempt in (1, 2):     # a KRaft quorum of three starting at once on a busy
        directory = str(tmp_path_factory.mktemp("kafka3_" + request.module.__name__))
        # the controller fences a dead broker after 3 s (9 s by default), so
        # its partitions get new leaders sooner
        cluster = mod.KafkaCluster(
            directory, size=3, heap="512m",    # 256m: node 3 once died of OutOfMemoryError at start
            extra=lambda _id: {"broker.session.timeout.ms": 3000,
                               "broker.heartbeat.interval.ms": 500})
        try:                   # machine has been seen to miss its start deadline once
            cluster.start()
            break
        except mod.NodeError as exc:
            if attempt == 2:
                raise
            print(f"3 kafka nodes did not start, trying again in a new directory: {exc}"[:2000])
    print(f"3 kafka nodes up in {cluster.start_seconds:.1f} s on {cluster.bootstrap}")
    yield cluster
    cluster.stop(kill=True)


# ---- reading what a topic holds ---------------------------------------------------
def read_topic(bootstrap, topic, timeout=20, **conf):
    """Every message the topic holds now, in partition order: dicts of
    partition, offset, key (text or None), headers (dict), value (bytes)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}",
                         "enable.auto.commit": False, **conf})
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        found, deadline = [], time.monotonic() + timeout
        done = {p: False for p in ends}
        while not all(done.values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout} s")
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                key = msg.key()
                found.append({"partition": msg.partition(), "offset": msg.offset(),
                              "key": key.decode() if key is not None else None,
                              "headers": {k: v.decode() for k, v in msg.headers() or ()},
                              "value": msg.value()})
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done[msg.partition()] = True
        return found
    finally:
        consumer.close()


def events_of(messages):
    return [json.loads(m["value"]) for m in messages]


def wait_topic(bootstrap, topic, predicate, timeout=60, what="messages"):
    """read_topic until ``predicate(messages)`` holds; the messages."""
    from confluent_kafka import KafkaException
    deadline = time.monotonic() + timeout
    while True:
        try:
            messages = read_topic(bootstrap, topic)
        except (KeyError, KafkaException):   # no topic yet; a leader moving
            messages = []
        if predicate(messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} on {topic} "
                                 f"({len(messages)} there)")
        time.sleep(0.3)


def committed_offsets(bootstrap, topic, group):
    """{partition: (committed offset, high watermark)} of ``group`` on ``topic``."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        found = {}
        for tp in consumer.committed(parts, timeout=10):
            found[tp.partition] = (tp.offset, consumer.get_watermark_offsets(tp, timeout=10)[1])
        return found
    finally:
        consumer.close()
