"""Kafka sink: every tracked event published to ``Topic`` as one JSON message.

Created in a store process after the fork; the producer (confluent-kafka,
i.e. librdkafka, chosen by loadtest/bench_kafka.py) and its threads belong to
that process. Message key = the event's ``vid`` (so one visitor's events
share a partition and stay in order), value = the event JSON (the fields the
NATS sink publishes), header ``eid`` = the event id.

A batch counts as written when the broker has acknowledged every message of
it (``acks=all`` and an idempotent producer by default: written to every
in-sync replica, no duplicates from the producer's own retries). Encoding,
producing and waiting for the acknowledgements run on the sink's own thread,
so the store process's event loop keeps reading the spool meanwhile.

Delivery is at-least-once: a batch with an unacknowledged message raises, its
SinkChannel retries it, and only the messages not yet acknowledged are
produced again; one whose acknowledgement was lost is published twice, with
the same ``eid`` header for downstream de-duplication.

Memory is bounded: the producer holds at most two batches of messages
(``BatchMaxEvents`` each), and each has ``Timeout`` to be acknowledged; past
that the batch fails and waits in the spool (its stage reads on only once it
is written), however long the brokers are away.
"""
import asyncio
import logging
import os
import time

import orjson

from engine.kafka.options import EID_HEADER, NOTIFY_KEYS, KafkaOptions
from engine.logs import log
from engine.store.sinks.base import Sink, SinkUnavailable
from engine.system.threads import named_executor

CONNECT_TIMEOUT_MAX = 10.0     # seconds the start waits for the brokers' metadata


class KafkaDeliveryFailed(RuntimeError):
    """Some messages of a batch were not acknowledged; the batch is retried."""


def _default(value):
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError


def encode(event):
    """The message value: the event JSON, as the NATS sink publishes it."""
    return orjson.dumps(event, default=_default)


class KafkaSink(Sink):
    service = "kafka"
    entry_keys = NOTIFY_KEYS
    multi_writer = True

    def __init__(self, entry, config):
        super().__init__(entry, config)
        self.opts = KafkaOptions.from_entry(entry)
        self.topic = self.opts.topic
        # one batch being written plus one retried (BatchMaxEvents each)
        self.max_messages = max(2 * getattr(config, "batch_max_events", 1000), 1000)
        self.producer = None
        self.io = None
        self.last_error = None       # the latest client error (for messages)
        self.fatal = None            # a fatal producer error: the producer is remade
        self._acked = None           # (batch, eids acknowledged) while a batch is retried

    # ---- start / stop ----------------------------------------------------
    async def start(self):
        if self.producer is not None:
            return
        from confluent_kafka import Producer
        if self.opts.unverified:
            log.warning("kafka TLS without CACert and Secure: the broker certificate is not "
                        "verified", hosts=self.opts.hosts)
        if self.opts.plain_password:
            log.warning("kafka SASL PLAIN without TLS: the password is sent in clear",
                        hosts=self.opts.hosts)
        if self.io is None:
            self.io = named_executor("kafka-io")
        conf = self.opts.producer_config(f"tracker-{os.getpid()}", self.max_messages)
        conf.update({"error_cb": self._on_error, "logger": client_logger(),
                     "allow.auto.create.topics": False})
        try:
            producer = Producer(conf)
        except Exception as exc:      # KafkaException: a setting librdkafka refuses
            raise SinkUnavailable(f"kafka: cannot create the producer: {exc}") from None
        self.fatal = None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.io, self._check_topic, producer)
        except BaseException:
            await loop.run_in_executor(self.io, producer.flush, 0)
            raise
        self.producer = producer
        log.info("kafka producer ready", topic=self.topic, hosts=self.opts.hosts,
                 acks=self.opts.acks, compression=self.opts.compression)

    def _check_topic(self, producer):
        """In the sink's thread: the brokers answer and the topic exists
        (created when ``Partitions`` says so); SinkUnavailable otherwise."""
        from confluent_kafka import KafkaException
        wait = min(self.opts.timeout, CONNECT_TIMEOUT_MAX)
        try:
            topic = producer.list_topics(self.topic, timeout=wait).topics.get(self.topic)
        except KafkaException as exc:
            producer.poll(0)          # serve error_cb: the cause (TLS, SASL, ...)
            cause = self.last_error or exc.args[0]
            raise SinkUnavailable(f"kafka: no broker of {', '.join(self.opts.hosts)} "
                                  f"answered within {wait:g} s: {cause}") from None
        if topic is not None and topic.error is None:
            return
        if not self.opts.partitions:
            raise SinkUnavailable(f"kafka: topic {self.topic!r} does not exist; create it, "
                                  "or set Partitions to have the sink create it")
        create_topic(self.opts, self.opts.client_config(f"tracker-{os.getpid()}"), wait)

    def _on_error(self, err):
        """librdkafka's error callback (called on the sink's thread)."""
        self.last_error = err
        if err.fatal():
            self.fatal = err
            log.error("kafka producer fatal error; the producer is made again",
                      error=str(err))
        else:
            log.debug("kafka client error", error=str(err))

    async def close(self):
        producer, self.producer = self.producer, None
        if producer is not None:
            loop = asyncio.get_running_loop()
            try:
                left = await loop.run_in_executor(self.io, producer.flush,
                                                  min(self.opts.timeout, 5.0))
                if left:
                    log.warning("kafka producer closed with messages unacknowledged; "
                                "their batch stays in the spool", messages=left)
            except Exception as exc:
                log.debug("kafka close failed", error=repr(exc))
        if self.io is not None:
            self.io.shutdown(wait=True)
            self.io = None

    # ---- writing ---------------------------------------------------------
    async def write_batch(self, events):
        if not events:
            return 0
        if self.fatal is not None and self.producer is not None:
            await self.close()
        if self.producer is None:
            await self.start()
        acked = self._acked[1] if self._acked and self._acked[0] is events else set()
        todo = [ev for ev in events if ev["eid"] not in acked] if acked else events
        loop = asyncio.get_running_loop()
        delivered, failed, left = await loop.run_in_executor(self.io, self._send, todo)
        if not failed and not left:
            self._acked = None
            return len(events)
        self._acked = (events, acked | delivered)
        what = failed[0] if failed else f"no answer within {self.opts.timeout:g} s"
        raise KafkaDeliveryFailed(f"kafka: {len(events) - len(self._acked[1])} of "
                                  f"{len(events)} events not acknowledged ({what}); "
                                  "the batch is retried")

    def _send(self, events):
        """In the sink's thread: produce ``events`` and wait until each is
        acknowledged or failed. Returns (eids acknowledged, first errors,
        messages still unanswered)."""
        failed_eids, errors = set(), []

        def done(err, msg):
            if err is not None:
                failed_eids.add(dict(msg.headers() or ()).get(EID_HEADER, b"").decode())
                if len(errors) < 3:
                    errors.append(str(err))

        produce, topic, dumps = self.producer.produce, self.topic, encode
        sent = []
        try:
            for ev in events:
                eid = ev["eid"]
                produce(topic, dumps(ev), ev["vid"].encode(),
                        headers=[(EID_HEADER, eid.encode())], on_delivery=done)
                sent.append(eid)
        except BufferError:
            errors.append(f"producer queue full ({self.max_messages} messages)")
        except Exception as exc:      # KafkaException: e.g. a fatal producer state
            errors.append(repr(exc))
        # every message is answered within message.timeout.ms (Timeout)
        left = self.producer.flush(self.opts.timeout + 5.0)
        if left:
            return set(), errors, left
        delivered = set(sent) - failed_eids
        if len(sent) < len(events):
            errors = errors or ["not every event was produced"]
        return delivered, errors, 0

    # ---- tracker schema apply ----------------------------------------------
    async def apply_schema(self):
        """``tracker schema apply``: create the topic when it is missing and
        ``Partitions`` is set; say what is there."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, describe_or_create, self.opts)


class _ClientLog(logging.Handler):
    """librdkafka's log lines (handed to a ``logging.Logger``) as this
    collector's JSON log lines instead of text on stderr; each kind of line
    (its first word, e.g. FAIL) at most once per ``EVERY`` seconds, so a
    broker that stays away does not flood the log."""
    EVERY = 60.0

    def __init__(self):
        super().__init__()
        self.last = {}

    def emit(self, record):
        text = record.getMessage()
        kind = text.split(" ", 1)[0]
        now = time.monotonic()
        if now - self.last.get(kind, -self.EVERY) < self.EVERY:
            return
        self.last[kind] = now
        (log.warning if record.levelno >= logging.WARNING else log.debug)(
            "kafka client", detail=text[:300])


def client_logger():
    logger = logging.getLogger("tracker.kafka.client")
    if not logger.handlers:
        logger.addHandler(_ClientLog())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def create_topic(opts, conf, wait):
    """Create ``opts.topic`` with ``Partitions`` and ``Replicas`` (with
    min.insync.replicas one less than Replicas, from 3 replicas up); a topic
    another process created meanwhile is fine. SinkUnavailable on failure."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic
    settings = {}
    if opts.replicas >= 3:
        settings["min.insync.replicas"] = str(opts.replicas - 1)
    admin = AdminClient(conf)
    future = admin.create_topics([NewTopic(opts.topic, opts.partitions, opts.replicas,
                                           config=settings)],
                                 request_timeout=wait)[opts.topic]
    try:
        future.result(wait + 5)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise SinkUnavailable(f"kafka: cannot create topic {opts.topic!r}: "
                                  f"{exc.args[0]}") from None
        return False
    log.info("kafka topic created", topic=opts.topic, partitions=opts.partitions,
             replicas=opts.replicas, **settings)
    return True


def describe_or_create(opts):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    conf = opts.client_config(f"tracker-schema-{os.getpid()}")
    wait = min(opts.timeout, CONNECT_TIMEOUT_MAX)
    try:
        found = AdminClient(conf).list_topics(opts.topic, timeout=wait).topics.get(opts.topic)
    except KafkaException as exc:
        raise SinkUnavailable(f"kafka: no broker answered within {wait:g} s: "
                              f"{exc.args[0]}") from None
    if found is not None and found.error is None:
        return [f"topic {opts.topic} exists ({len(found.partitions)} partitions)"]
    if not opts.partitions:
        raise SinkUnavailable(f"kafka: topic {opts.topic!r} does not exist and Partitions "
                              "is not set")
    create_topic(opts, conf, wait)
    return [f"topic {opts.topic} created ({opts.partitions} partitions)"]
