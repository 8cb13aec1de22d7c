"""Kafka sink: every tracked event published to ``Topic`` as one JSON message.

Created in a store process after the fork; its ``Publisher``
(engine/kafka/producer.py: confluent-kafka, i.e. librdkafka, chosen by
loadtest/bench_kafka.py) and its thread belong to that process. Message key =
the event's ``vid`` (one visitor's events share a partition and stay in
order), value = the event JSON (the fields the NATS sink publishes), header
``eid`` = the event id.

A batch counts as written when the brokers have acknowledged every message of
it (by default ``acks=all`` from an idempotent producer: on every in-sync
replica, no duplicates from the producer's own retries). Encoding, producing
and waiting run on the publisher's thread, so the store process's event loop
keeps reading the spool meanwhile.

Delivery is at-least-once: a batch with a message not acknowledged raises,
its SinkChannel retries it, and only the messages not acknowledged yet are
produced again; one whose acknowledgement was lost is published twice, with
the same ``eid`` header for downstream de-duplication.

Memory is bounded: the client holds at most the batch being written
(``BatchMaxEvents``), and each message has ``Timeout`` to be acknowledged;
past that the batch fails and waits in the spool (its stage reads on only once
it is written), however long the brokers are away.
"""
import os

import orjson

from engine.kafka.options import NOTIFY_KEYS, KafkaOptions
from engine.kafka.producer import Publisher, describe_or_create
from engine.logs import log
from engine.store.sinks.base import Sink


class KafkaDeliveryFailed(RuntimeError):
    """Some messages of a batch were not acknowledged; the batch is retried."""


def _default(value):
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError


def encode(event):
    """The message value: the event JSON, as the NATS sink publishes it."""
    return orjson.dumps(event, default=_default)


def messages_of(events):
    """(key, value, eid) of each event: key = vid, value = the event JSON."""
    return [(ev["vid"].encode(), encode(ev), ev["eid"]) for ev in events]


class KafkaSink(Sink):
    service = "kafka"
    entry_keys = NOTIFY_KEYS
    multi_writer = True

    def __init__(self, entry, config):
        super().__init__(entry, config)
        self.opts = KafkaOptions.from_entry(entry)
        self.topic = self.opts.topic
        # a batch and a retried remainder of it
        self.max_messages = max(2 * getattr(config, "batch_max_events", 1000), 1000)
        self.publisher = None
        self._acked = None           # (batch, eids acknowledged) while a batch is retried

    async def start(self):
        if self.publisher is None:
            self.publisher = Publisher(self.opts, self.max_messages,
                                       name=f"tracker-{os.getpid()}")
        await self.publisher.start()
        log.info("kafka producer ready", topic=self.topic, hosts=self.opts.hosts,
                 acks=self.opts.acks, compression=self.opts.compression)

    async def write_batch(self, events):
        if not events:
            return 0
        if self.publisher is None:
            await self.start()
        acked = self._acked[1] if self._acked and self._acked[0] is events else set()
        todo = [ev for ev in events if ev["eid"] not in acked] if acked else events
        delivery = await self.publisher.deliver(messages_of(todo))
        if delivery.complete:
            self._acked = None
            return len(events)
        acked = acked | delivery.acked
        self._acked = (events, acked)
        what = (delivery.errors[0] if delivery.errors
                else f"no answer within {self.opts.timeout:g} s")
        raise KafkaDeliveryFailed(f"kafka: {len(events) - len(acked)} of {len(events)} "
                                  f"events not acknowledged ({what}); the batch is retried")

    async def close(self):
        if self.publisher is not None:
            await self.publisher.close()

    async def apply_schema(self):
        """``tracker schema apply``: create the topic when it is missing and
        ``Partitions`` is set; say what is there."""
        import asyncio
        return await asyncio.get_running_loop().run_in_executor(
            None, describe_or_create, self.opts)
