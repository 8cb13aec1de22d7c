"""Publishing to one Kafka topic and waiting for the acknowledgements: what
the Kafka sink and the repeater (engine/kafka/repeat.py) share.

``Publisher`` owns a confluent-kafka ``Producer`` (librdkafka) and one thread
(``kafka-io``) where every call to it runs: the asyncio loop that awaits
``deliver`` stays free meanwhile. ``deliver(messages)`` produces a group of
(key, value, eid) and returns once each one is acknowledged or failed, which
takes at most ``Timeout`` (librdkafka's message.timeout.ms): it never leaves
messages behind it in the client, so the client holds at most the group
being delivered (bounded by ``max_messages``).
"""
import asyncio
import logging
import os
import time

from engine.kafka.options import EID_HEADER
from engine.logs import log
from engine.store.sinks.base import SinkUnavailable
from engine.system.threads import named_executor

CONNECT_TIMEOUT_MAX = 10.0     # seconds a start waits for the brokers' metadata


class Delivery:
    """What became of a group: ``acked`` (the eids the brokers acknowledged),
    ``errors`` (the first few; one at least when any message failed) and
    ``unanswered`` (messages still in the client after the wait)."""
    __slots__ = ("acked", "errors", "unanswered", "complete")

    def __init__(self, acked, errors, unanswered, complete):
        self.acked, self.errors, self.unanswered = acked, errors, unanswered
        self.complete = complete


class Publisher:
    def __init__(self, opts, max_messages, name=None):
        self.opts = opts
        self.topic = opts.topic
        self.max_messages = max_messages
        self.name = name
        self.producer = None
        self.io = None
        self.last_error = None       # the latest client error (for messages)
        self.fatal = None            # a fatal producer error: the producer is remade

    async def start(self):
        """Connect and check (or create) the topic; SinkUnavailable when no
        broker answers within min(Timeout, 10 s) or the topic is missing."""
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
        name = self.name or f"tracker-{os.getpid()}"
        conf = self.opts.producer_config(name, self.max_messages)
        conf.update({"error_cb": self._on_error, "logger": client_logger(),
                     "allow.auto.create.topics": False})
        try:
            producer = Producer(conf)
        except Exception as exc:      # KafkaException: a setting librdkafka refuses
            raise SinkUnavailable(f"kafka: cannot create the producer: {exc}") from None
        self.fatal = None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.io, self._check_topic, producer, name)
        except BaseException:
            await loop.run_in_executor(self.io, producer.flush, 0)
            raise
        self.producer = producer

    def _check_topic(self, producer, name):
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
                                  "or set Partitions to have it created")
        create_topic(self.opts, self.opts.client_config(name), wait)

    def _on_error(self, err):
        """librdkafka's error callback (called on the ``kafka-io`` thread)."""
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
                    log.warning("kafka producer closed with messages unacknowledged",
                                messages=left)
            except Exception as exc:
                log.debug("kafka close failed", error=repr(exc))
        if self.io is not None:
            self.io.shutdown(wait=True)
            self.io = None

    async def deliver(self, messages):
        """Produce ``messages`` [(key bytes or None, value bytes, eid str)] and
        wait for every acknowledgement; returns a ``Delivery``."""
        if self.fatal is not None and self.producer is not None:
            await self.close()
        if self.producer is None:
            await self.start()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io, self._deliver, messages)

    def _deliver(self, messages):
        # Each callback knows its eid: a failed message's own fields (its
        # headers) are not reliable once librdkafka has given up on it.
        acked, failures = [], []

        def callback(eid):
            def done(err, _msg):
                if err is None:
                    acked.append(eid)
                else:
                    failures.append(err)
            return done

        produce, topic = self.producer.produce, self.topic
        errors, produced = [], 0
        try:
            for key, value, eid in messages:
                produce(topic, value, key, headers=[(EID_HEADER, eid.encode())],
                        on_delivery=callback(eid))
                produced += 1
        except BufferError:
            errors.append(f"producer queue full ({self.max_messages} messages)")
        except Exception as exc:      # KafkaException: e.g. a fatal producer state
            errors.append(repr(exc))
        # every message is answered within message.timeout.ms (Timeout)
        left = self.producer.flush(self.opts.timeout + 5.0)
        errors += [str(err) for err in failures[:3]]
        complete = not errors and not left and len(acked) == len(messages)
        if not complete and not errors:
            errors.append(f"{len(messages) - len(acked)} messages not answered in time")
        return Delivery(set(acked), errors, left, complete)


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
    """Create ``opts.topic`` with ``Partitions`` and ``Replicas`` (and
    min.insync.replicas one less than Replicas, from 3 replicas up); a topic
    another process created meanwhile is fine. SinkUnavailable on failure."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic
    settings = {}
    if opts.replicas >= 3:
        settings["min.insync.replicas"] = str(opts.replicas - 1)
    conf = {k: v for k, v in conf.items() if k != "logger"}
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
    """``tracker schema apply`` for a Kafka entry: lines saying what is there."""
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
