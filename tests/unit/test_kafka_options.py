"""Kafka entry validation, librdkafka settings, the sink's message encoding and
the repeater's argument and message checks (pure functions, no broker)."""
import orjson
import pytest

from engine.kafka.options import KafkaOptions
from engine.kafka.repeat import Malformed, identify, parse_endpoint
from engine.store.sinks.kafka import messages_of

HOSTS = ["127.0.0.1:9092"]


def test_bad_entry_names_every_key_value_and_expectation():
    with pytest.raises(ValueError) as err:
        KafkaOptions.from_entry({"Service": "kafka", "Hosts": ["no-port"], "Topic": "a b",
                                 "Acks": "2", "Compression": "brotli", "Replicas": 0,
                                 "Cert": "c.pem", "Password": "p"})
    text = str(err.value)
    for part in ("Hosts: got ['no-port']", "Topic: got 'a b'", "Acks: got '2'",
                 "Compression: got 'brotli'", "Replicas: got 0", "Cert/Key",
                 "Password: given without Username"):
        assert part in text, (part, text)


def test_defaults_are_an_idempotent_acks_all_producer():
    opts = KafkaOptions.from_entry({"Hosts": HOSTS, "Topic": "tracker.events"})
    conf = opts.producer_config("t", 2000)
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["compression.type"] == "lz4" and conf["message.timeout.ms"] == 30000
    assert conf["queue.buffering.max.messages"] == 2000
    assert conf["security.protocol"] == "PLAINTEXT"
    assert KafkaOptions.from_entry({"Hosts": HOSTS, "Topic": "t", "Acks": "1"}) \
        .producer_config("t", 10)["enable.idempotence"] is False


def test_tls_and_sasl_select_the_protocol_and_verification():
    opts = KafkaOptions.from_entry({"Hosts": HOSTS, "Topic": "t", "CACert": "/ca.pem",
                                    "Secure": True, "SASL": "SCRAM-SHA-512",
                                    "Username": "u", "Password": "p"})
    conf = opts.client_config("t")
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["ssl.ca.location"] == "/ca.pem"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert (conf["sasl.mechanism"], conf["sasl.username"]) == ("SCRAM-SHA-512", "u")
    plain = KafkaOptions.from_entry({"Hosts": HOSTS, "Topic": "t", "Username": "u"})
    assert plain.client_config("t")["security.protocol"] == "SASL_PLAINTEXT"
    assert plain.plain_password
    unverified = KafkaOptions.from_entry({"Hosts": HOSTS, "Topic": "t", "Cert": "c",
                                          "Key": "k"})
    assert unverified.unverified
    assert unverified.client_config("t")["enable.ssl.certificate.verification"] is False


def test_message_key_is_the_vid_and_the_value_the_event_json():
    ev = {"eid": "e-1", "vid": "v-1", "params": {"a": "b"}, "latlon": [1.5, 2.0]}
    [(key, value, eid)] = messages_of([ev])
    assert key == b"v-1" and eid == "e-1" and orjson.loads(value) == ev


@pytest.mark.parametrize("text, expected", [
    ("nats:tic.track", ("nats", "tic.track")),
    ("kafka:tracker.events", ("kafka", "tracker.events")),
])
def test_endpoints_parse(text, expected):
    found = parse_endpoint(text)
    assert (found.kind, found.name) == expected


@pytest.mark.parametrize("text, reason", [
    ("nats:a.*", "without wildcards"), ("kafka:a b", "topic name"),
    ("redis:x", "expected nats:SUBJECT"), ("kafka:", "expected nats:SUBJECT"),
])
def test_bad_endpoints_say_why(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_endpoint(text)


def test_identify_takes_the_header_eid_else_the_field():
    body = orjson.dumps({"eid": "from-body", "vid": "v"})
    assert identify("from-header", body) == ("from-header", "v")
    assert identify(None, body) == ("from-body", "v")
    assert identify(None, orjson.dumps({"eid": "e"})) == ("e", None)
    for data, reason in ((b"oops", "not JSON"), (b"[1]", "not a JSON object"),
                         (orjson.dumps({"vid": "v"}), "no eid")):
        with pytest.raises(Malformed, match=reason):
            identify(None, data)
