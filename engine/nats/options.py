"""NATS entries of ``Notify`` and ``Consume``: validation and client options.

Imported by ``engine.config`` (to validate a file before anything starts) and
by the NATS sink and consumer; it does not import the NATS client itself.

Keys (see docs/nats.md):

    Hosts        list of "host:port", "nats://host:port" or "tls://host:port"  (required)
    Context      subject events are published on                  (Notify, required)
    Format       "json" (the only format)                         default "json"
    Timeout      milliseconds: connect, flush and JetStream ack   default 2000
    CACert, Cert, Key, Secure   TLS (see tls_context)
    Username, Password          user/password authentication
    Critical     refuse to start while NATS is unreachable       default false
    JetStream    publish with JetStream acks (Notify only)       default false
    Stream       JetStream stream to publish into; created with the Context
                 subject when missing                             default "" (any stream)
    Replicas     replicas of a stream created by the collector    default 1
    Filter       [{"Alias": "log"|"count"|"update", "Id": subject}]  (Consume)
    MessageLimit, BytesLimit (ByteLimit)  pending limits per subscription (Consume)
"""
import ssl
from dataclasses import dataclass, field

# The keys each kind of entry reads; engine/entries.py reports any other.
_SHARED_KEYS = {"Service", "Critical", "Hosts", "Format", "Timeout", "CACert", "Cert", "Key",
                "Secure", "Username", "Password"}
NOTIFY_KEYS = frozenset(_SHARED_KEYS | {"Context", "JetStream", "Stream", "Replicas"})
CONSUME_KEYS = frozenset(_SHARED_KEYS | {"JetStream", "Filter", "MessageLimit", "BytesLimit",
                                         "ByteLimit"})
FILTER_KEYS = frozenset({"Alias", "Id"})

ALIASES = ("log", "count", "update")
DEFAULT_FILTER = [{"Alias": "log", "Id": "tic.log.>"},
                  {"Alias": "count", "Id": "tic.count.>"},
                  {"Alias": "update", "Id": "tic.update.>"}]
QUEUE_GROUP = "tracker"
DEFAULT_TIMEOUT_MS = 2000
DEFAULT_MESSAGE_LIMIT = 65536
DEFAULT_BYTES_LIMIT = 64 * 1024 * 1024


def _bad_subject(subject, wildcards):
    if not isinstance(subject, str) or not subject or subject != subject.strip():
        return True
    if any(c in subject for c in " \t\r\n"):
        return True
    tokens = subject.split(".")
    if any(not t for t in tokens):
        return True
    if not wildcards and any(t in ("*", ">") for t in tokens):
        return True
    return ">" in tokens[:-1]


def check_entry(where, entry, section):
    """Problems (strings) with a NATS Notify/Consume entry; empty when valid."""
    problems = []
    hosts = entry.get("Hosts")
    if not hosts or not isinstance(hosts, list) or not all(
            isinstance(h, str) and h.strip() for h in hosts):
        problems.append(f"{where}.Hosts: got {hosts!r}, expected a non-empty list of "
                        '"host:port" / "nats://host:port" / "tls://host:port"')
    fmt = entry.get("Format", "json")
    if fmt != "json":
        problems.append(f'{where}.Format: got {fmt!r}, expected "json"')
    timeout = entry.get("Timeout", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout <= 0:
        problems.append(f"{where}.Timeout: got {timeout!r}, expected milliseconds > 0")
    if (entry.get("Cert") or entry.get("Key")) and not (entry.get("Cert") and entry.get("Key")):
        problems.append(f"{where}.Cert/Key: both are needed for a client certificate")
    if "Stream" in entry and (not isinstance(entry["Stream"], str)
                              or any(c in entry["Stream"] for c in " .*>")):
        problems.append(f"{where}.Stream: got {entry['Stream']!r}, expected a JetStream "
                        "stream name (no spaces, '.', '*' or '>')")
    replicas = entry.get("Replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 5:
        problems.append(f"{where}.Replicas: got {replicas!r}, expected an integer from 1 to 5")
    if section == "Notify":
        context = entry.get("Context")
        if _bad_subject(context, wildcards=False):
            problems.append(f"{where}.Context: got {context!r}, expected the NATS subject "
                            'events are published on (e.g. "tic.track")')
    else:
        if entry.get("JetStream"):
            problems.append(f"{where}.JetStream: consuming from JetStream is not supported; "
                            "the consumer uses core NATS queue subscriptions")
        filters = entry.get("Filter", DEFAULT_FILTER)
        if not isinstance(filters, list) or not filters:
            problems.append(f"{where}.Filter: got {filters!r}, expected a non-empty list of "
                            '{"Alias": "log"|"count"|"update", "Id": "<subject>"}')
        else:
            for i, f in enumerate(filters):
                if (not isinstance(f, dict) or f.get("Alias") not in ALIASES
                        or _bad_subject(f.get("Id"), wildcards=True)):
                    problems.append(f"{where}.Filter[{i}]: got {f!r}, expected "
                                    '{"Alias": "log"|"count"|"update", "Id": "<subject>"}')
        for key in ("MessageLimit", "BytesLimit", "ByteLimit"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                problems.append(f"{where}.{key}: got {value!r}, expected an integer > 0")
    return problems


@dataclass
class NatsOptions:
    hosts: list
    subject: str = ""
    timeout: float = DEFAULT_TIMEOUT_MS / 1000
    jetstream: bool = False
    stream: str = ""
    replicas: int = 1
    critical: bool = False
    filters: list = field(default_factory=list)
    message_limit: int = DEFAULT_MESSAGE_LIMIT
    bytes_limit: int = DEFAULT_BYTES_LIMIT
    user: str = ""
    password: str = ""
    ca_cert: str = ""
    cert: str = ""
    key: str = ""
    secure: bool = False

    @classmethod
    def from_entry(cls, entry):
        hosts = [h.strip() for h in entry.get("Hosts") or []]
        return cls(
            hosts=hosts,
            subject=entry.get("Context", ""),
            timeout=entry.get("Timeout", DEFAULT_TIMEOUT_MS) / 1000,
            jetstream=bool(entry.get("JetStream", False)),
            stream=entry.get("Stream", ""),
            replicas=entry.get("Replicas", 1),
            critical=bool(entry.get("Critical", False)),
            filters=[(f["Alias"], f["Id"]) for f in entry.get("Filter", DEFAULT_FILTER)],
            message_limit=entry.get("MessageLimit", DEFAULT_MESSAGE_LIMIT),
            bytes_limit=entry.get("BytesLimit", entry.get("ByteLimit", DEFAULT_BYTES_LIMIT)),
            user=entry.get("Username", ""),
            password=entry.get("Password", ""),
            ca_cert=entry.get("CACert", ""),
            cert=entry.get("Cert", ""),
            key=entry.get("Key", ""),
            secure=bool(entry.get("Secure", False)),
        )

    @property
    def wants_tls(self):
        return bool(self.ca_cert or self.cert or self.secure
                    or any(h.startswith("tls://") for h in self.hosts))

    def tls_context(self):
        """The client TLS context, or None for plain connections.

        TLS is used when CACert, Cert/Key or Secure is set, or a host is
        ``tls://``. ``Secure: true`` verifies the server's chain (against
        CACert, else the system CAs) and its host name. ``Secure: false``
        (the Go collector's default) still verifies the chain when CACert is
        given, but not the host name; with neither it encrypts without
        verifying (logged as a warning by the caller).
        """
        if not self.wants_tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=self.ca_cert or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.secure:
            ctx.check_hostname = False
            if not self.ca_cert:
                ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    @property
    def unverified(self):
        return self.wants_tls and not self.secure and not self.ca_cert
