"""Kafka entries of ``Notify`` (and the repeater's Kafka side): validation
and client settings.

The client is confluent-kafka (librdkafka); loadtest/bench_kafka.py compares
it with aiokafka. This module builds librdkafka configuration dicts and does
not import the client itself, so a config check needs no broker.

Keys (docs/kafka.md):

    Hosts        list of "host:port" bootstrap brokers               (required)
    Topic        topic events are published to                        (required)
    Acks         "all" | "1" | "0"                                    default "all"
    Compression  "none" | "gzip" | "snappy" | "lz4" | "zstd"          default "lz4"
    Timeout      ms: delivery timeout of a batch, connect at start    default 30000
    Partitions   create the topic with this many partitions when it is missing
                 (0: never create it; it must exist)                  default 0
    Replicas     replication factor of a topic the sink creates       default: the broker's
    CACert, Cert, Key, Secure   TLS, as for NATS (see tls_settings)
    SASL         "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"          default "PLAIN"
    Username, Password          SASL credentials (SASL is on when Username is set)
    Format       "json" (the only format)                             default "json"
    Critical     refuse to start while no broker answers              default false
"""
import re
from dataclasses import dataclass

NOTIFY_KEYS = frozenset({"Service", "Critical", "Hosts", "Topic", "Acks", "Compression",
                         "Timeout", "Partitions", "Replicas", "CACert", "Cert", "Key", "Secure",
                         "SASL", "Username", "Password", "Format"})
ACKS = ("all", "1", "0")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_TIMEOUT_MS = 30000
EID_HEADER = "eid"
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$")


def bad_topic(name):
    """Why ``name`` is not a Kafka topic name, or "" when it is one."""
    if not isinstance(name, str) or not _TOPIC_RE.match(name) or name in (".", ".."):
        return ("expected a topic name: 1 to 249 of the letters, digits, '.', '_', '-' "
                "(not '.' or '..')")
    return ""


def _int_key(entry, key, default, low, high, problems):
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        problems.append(f"{key}: got {value!r}, expected an integer from {low} to {high}")
        return default
    return value


def _choice(entry, key, default, choices, problems):
    value = entry.get(key, default)
    if value not in choices:
        problems.append(f"{key}: got {value!r}, expected one of "
                        + ", ".join(f'"{c}"' for c in choices))
        return default
    return value


def check_hosts(hosts):
    """Problems with a ``Hosts`` list (empty when it is a list of host:port)."""
    if not hosts or not isinstance(hosts, list) or not all(
            isinstance(h, str) and _HOST_RE.match(h.strip()) for h in hosts):
        return [f'Hosts: got {hosts!r}, expected a non-empty list of "host:port" brokers']
    return []


@dataclass
class KafkaOptions:
    hosts: list
    topic: str = ""
    acks: str = "all"
    compression: str = "lz4"
    timeout: float = DEFAULT_TIMEOUT_MS / 1000
    partitions: int = 0
    replicas: int = -1          # -1: the broker's default.replication.factor
    ca_cert: str = ""
    cert: str = ""
    key: str = ""
    secure: bool = False
    sasl: str = "PLAIN"
    user: str = ""
    password: str = ""
    critical: bool = False

    @classmethod
    def from_entry(cls, entry, need_topic=True):
        """Options of a Notify entry; ValueError naming every bad key."""
        problems = check_hosts(entry.get("Hosts"))
        topic = entry.get("Topic", "")
        if need_topic and bad_topic(topic):
            problems.append(f"Topic: got {topic!r}, {bad_topic(topic)}")
        acks = _choice(entry, "Acks", "all", ACKS, problems)
        compression = _choice(entry, "Compression", "lz4", COMPRESSIONS, problems)
        sasl = _choice(entry, "SASL", "PLAIN", MECHANISMS, problems)
        timeout = _int_key(entry, "Timeout", DEFAULT_TIMEOUT_MS, 100, 3_600_000, problems)
        partitions = _int_key(entry, "Partitions", 0, 0, 100_000, problems)
        replicas = _int_key(entry, "Replicas", -1, -1, 32, problems)
        if replicas == 0:
            problems.append("Replicas: got 0, expected at least 1 (or leave it out: the "
                            "broker's default)")
        if bool(entry.get("Cert")) != bool(entry.get("Key")):
            problems.append("Cert/Key: both are needed for a client certificate")
        if entry.get("Password") and not entry.get("Username"):
            problems.append("Password: given without Username")
        if entry.get("Format", "json") != "json":
            problems.append(f'Format: got {entry.get("Format")!r}, expected "json"')
        for key in ("CACert", "Cert", "Key", "Username", "Password"):
            if key in entry and not isinstance(entry[key], str):
                problems.append(f"{key}: got {entry[key]!r}, expected text")
        if "Secure" in entry and not isinstance(entry["Secure"], bool):
            problems.append(f"Secure: got {entry['Secure']!r}, expected true or false")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(hosts=[h.strip() for h in entry["Hosts"]], topic=topic, acks=acks,
                   compression=compression, timeout=timeout / 1000, partitions=partitions,
                   replicas=replicas, ca_cert=entry.get("CACert", ""),
                   cert=entry.get("Cert", ""), key=entry.get("Key", ""),
                   secure=bool(entry.get("Secure", False)), sasl=sasl,
                   user=entry.get("Username", ""), password=entry.get("Password", ""),
                   critical=bool(entry.get("Critical", False)))

    # ---- librdkafka settings -------------------------------------------
    @property
    def wants_tls(self):
        return bool(self.ca_cert or self.cert or self.secure)

    @property
    def unverified(self):
        """TLS that encrypts but does not verify the broker (logged as a warning)."""
        return self.wants_tls and not self.secure and not self.ca_cert

    @property
    def plain_password(self):
        """SASL PLAIN without TLS: the password crosses the network as text."""
        return bool(self.user) and self.sasl == "PLAIN" and not self.wants_tls

    def tls_settings(self):
        """TLS as for NATS: ``Secure: true`` verifies the broker's chain
        (against CACert, else the system CAs) and its host name; ``false``
        verifies the chain when CACert is given, not the host name; with
        neither it encrypts without verifying."""
        if not self.wants_tls:
            return {}
        found = {"ssl.endpoint.identification.algorithm": "https" if self.secure else "none"}
        if self.ca_cert:
            found["ssl.ca.location"] = self.ca_cert
        elif self.secure:
            found["ssl.ca.location"] = "probe"       # the system's CA bundle
        else:
            found["enable.ssl.certificate.verification"] = False
        if self.cert:
            found["ssl.certificate.location"] = self.cert
            found["ssl.key.location"] = self.key
        return found

    def client_config(self, name):
        """Settings every client (producer, consumer, admin) shares."""
        protocol = ("SASL_" if self.user else "") + ("SSL" if self.wants_tls else "PLAINTEXT")
        found = {"bootstrap.servers": ",".join(self.hosts), "client.id": name,
                 "security.protocol": protocol, "socket.keepalive.enable": True,
                 "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 5000}
        found.update(self.tls_settings())
        if self.user:
            found.update({"sasl.mechanism": self.sasl, "sasl.username": self.user,
                          "sasl.password": self.password})
        return found

    def producer_config(self, name, max_messages):
        """An idempotent producer (with acks=all) that holds at most
        ``max_messages`` unacknowledged messages and gives each one
        ``Timeout`` to be acknowledged."""
        found = self.client_config(name)
        found.update({
            "acks": self.acks,
            "enable.idempotence": self.acks == "all",
            "compression.type": self.compression,
            "linger.ms": 5,
            "batch.size": 1 << 20,
            "message.timeout.ms": int(self.timeout * 1000),
            "queue.buffering.max.messages": max_messages,
            "queue.buffering.max.kbytes": 256 * 1024,
            # the Java client's partitioner: a key lands where a Java producer
            # (Flink, Kafka Connect, ...) would put it
            "partitioner": "murmur2_random",
        })
        return found

    def consumer_config(self, name, group):
        """A consumer of ``group`` that commits only when told to."""
        found = self.client_config(name)
        found.update({"group.id": group, "enable.auto.commit": False,
                      "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                      "isolation.level": "read_committed",
                      "session.timeout.ms": 10000, "max.poll.interval.ms": 300000})
        return found
