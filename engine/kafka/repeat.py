"""``tracker repeat``: copy events from a NATS JetStream subject to a Kafka
topic, or from a Kafka topic to a JetStream subject (docs/kafka.md).

One group of at most ``--batch`` messages is in flight at a time: fetched
from the source, delivered to the target, and committed at the source only
once the target has acknowledged every message of it:

- JetStream source: a durable pull consumer (``--durable``) with
  ``max_ack_pending`` = the batch and explicit acks: after the Kafka
  acknowledgements every message of the group is acknowledged, the last one
  synchronously (one connection keeps them in order, so its answer comes
  after the others were taken). While the target is slow the group's messages
  are kept "in progress", so JetStream does not hand them out again meanwhile.
  Not AckAll: acknowledging a group's last message would also acknowledge
  every message below it still pending for someone else — the group a killed
  repeater held when it was smaller than the batch, which the next repeater
  would then never be given (a durable an earlier version made with AckAll is
  recreated at its acknowledged position, ``NatsSource.start``).
- Kafka source: a consumer group (``--group``) without auto-commit; the
  group's offsets are committed (synchronously) after the JetStream PubAcks.

A repeater that dies between delivery and commit delivers that group again
when it (or another one of the same durable / group) resumes: at-least-once.
Every message carries its event id (Kafka header ``eid``, JetStream
``Nats-Msg-Id``), so the JetStream stream drops a repeat within its
duplicate window and a Kafka consumer de-duplicates by ``eid``.

A message that is not a JSON object with an ``eid`` (in the header or the
body) is logged with its first 200 bytes, counted as malformed and skipped
(committed with its group); nothing else is held back by it.
"""
import asyncio
import signal
import time
from dataclasses import dataclass

import orjson

from engine.kafka.options import EID_HEADER, KafkaOptions, bad_topic
from engine.logs import log

NATS_MSG_ID = "Nats-Msg-Id"
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0


class Malformed(ValueError):
    pass


@dataclass
class Endpoint:
    kind: str      # "nats" | "kafka"
    name: str      # subject | topic

    def __str__(self):
        return f"{self.kind}:{self.name}"


def parse_endpoint(text):
    """``nats:SUBJECT`` or ``kafka:TOPIC``; ValueError saying what is wrong."""
    kind, sep, name = (text or "").partition(":")
    if not sep or kind not in ("nats", "kafka") or not name:
        raise ValueError(f"got {text!r}, expected nats:SUBJECT or kafka:TOPIC")
    if kind == "kafka" and bad_topic(name):
        raise ValueError(f"got {text!r}: {bad_topic(name)}")
    if kind == "nats":
        from engine.nats.options import _bad_subject
        if _bad_subject(name, wildcards=False):
            raise ValueError(f"got {text!r}: expected a NATS subject without wildcards")
    return Endpoint(kind, name)


def identify(eid, data):
    """(eid, vid or None) of one message: ``eid`` from its header when it had
    one, else from the JSON object; Malformed otherwise."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Malformed("not JSON") from None
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    eid = eid or obj.get("eid")
    if not isinstance(eid, str) or not eid:
        raise Malformed("no eid (header or field)")
    vid = obj.get("vid")
    return eid, vid if isinstance(vid, str) and vid else None


@dataclass
class Counts:
    received: int = 0
    delivered: int = 0
    malformed: int = 0
    duplicates: int = 0     # JetStream target: repeats the stream dropped
    groups: int = 0


# ---- sources -------------------------------------------------------------------
class NatsSource:
    """A JetStream durable pull consumer on ``subject``."""

    def __init__(self, opts, subject, durable, stream, batch, ack_wait):
        self.opts, self.subject, self.durable = opts, subject, durable
        self.stream, self.batch, self.ack_wait = stream, batch, ack_wait
        self.nc = self.sub = None

    async def start(self):
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from engine.store.sinks.nats import connect
        self.nc = await connect(self.opts, f"tracker-repeat-{self.durable}")
        js = self.nc.jetstream(timeout=self.opts.timeout)
        stream = self.stream or await find_stream(js, self.subject)
        resume_at = await self._recreate_unless_explicit(js, stream)
        where = (dict(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=resume_at)
                 if resume_at else dict(deliver_policy=DeliverPolicy.ALL))
        config = ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                                filter_subject=self.subject, max_ack_pending=self.batch,
                                ack_wait=self.ack_wait, **where)
        self.sub = await js.pull_subscribe(self.subject, durable=self.durable, stream=stream,
                                           config=config)
        log.info("repeat source ready", source=f"nats:{self.subject}", stream=stream,
                 durable=self.durable)

    async def _recreate_unless_explicit(self, js, stream):
        """Delete the durable if it does not ack explicitly (an earlier version
        made it with AckAll, see the module's docstring); the stream sequence
        to resume it at (the first one not acknowledged: what was delivered
        beyond it comes again, and is de-duplicated by eid downstream), or None."""
        import nats.js.errors
        from nats.js.api import AckPolicy
        try:
            info = await js.consumer_info(stream, self.durable)
        except nats.js.errors.NotFoundError:
            return None
        policy = info.config.ack_policy
        if policy == AckPolicy.EXPLICIT:
            return None
        resume_at = (info.ack_floor.stream_seq or 0) + 1 if info.ack_floor else 1
        log.warning("repeat durable does not ack explicitly; recreating it with explicit acks",
                    durable=self.durable, stream=stream, ack_policy=getattr(policy, "value", policy),
                    resume_at_sequence=resume_at)
        await js.delete_consumer(stream, self.durable)
        return resume_at

    async def fetch(self, timeout):
        import nats.errors
        try:
            return await self.sub.fetch(self.batch, timeout=timeout)
        except nats.errors.TimeoutError:
            return []

    @staticmethod
    def item(msg):
        return (msg.headers or {}).get(NATS_MSG_ID), msg.data

    async def ready(self):
        return True

    async def keep_alive(self, msgs):
        for msg in msgs:
            await msg.in_progress()

    async def commit(self, msgs):
        # Retried when the last ack's answer does not come: the messages acked
        # by then are skipped (acking one twice raises MsgAlreadyAckdError).
        for msg in msgs[:-1]:
            if not msg.is_acked:
                await msg.ack()                  # a publish each, no round trip
        await msgs[-1].ack_sync(timeout=self.opts.timeout)

    async def close(self):
        if self.nc is not None:
            await self.nc.close()


class KafkaSource:
    """A Kafka consumer of ``group`` on ``topic``; every call to it on one thread."""

    def __init__(self, opts, topic, group, batch):
        from engine.system.threads import named_executor
        self.opts, self.topic, self.group, self.batch = opts, topic, group, batch
        self.io = named_executor("kafka-consume")
        self.consumer = None

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    async def start(self):
        from confluent_kafka import Consumer, KafkaException
        from engine.kafka.producer import client_logger
        conf = self.opts.consumer_config(f"tracker-repeat-{self.group}", self.group)
        conf.update({"logger": client_logger(), "queued.max.messages.kbytes": 16384})
        self.consumer = Consumer(conf)
        wait = min(self.opts.timeout, 10.0)
        try:
            found = await self._call(self.consumer.list_topics, self.topic, wait)
        except KafkaException as exc:
            raise SourceUnavailable(f"kafka: no broker of {', '.join(self.opts.hosts)} "
                                    f"answered within {wait:g} s: {exc.args[0]}") from None
        topic = found.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise SourceUnavailable(f"kafka: topic {self.topic!r} does not exist")
        await self._call(self.consumer.subscribe, [self.topic])
        log.info("repeat source ready", source=f"kafka:{self.topic}", group=self.group)

    async def fetch(self, timeout):
        msgs = await self._call(self.consumer.consume, self.batch, timeout)
        good = []
        for msg in msgs:
            if msg.error() is not None:
                log.warning("kafka consumer error", error=str(msg.error()))
            else:
                good.append(msg)
        return good

    async def ready(self):
        """Partitions are assigned (a group join takes a moment)."""
        return bool(await self._call(self.consumer.assignment))

    @staticmethod
    def item(msg):
        for key, value in msg.headers() or ():
            if key == EID_HEADER and value:
                return value.decode("utf-8", "replace"), msg.value()
        return None, msg.value()

    async def keep_alive(self, msgs):
        """Nothing: a group member has max.poll.interval.ms (5 min) between polls."""

    async def commit(self, msgs):
        def store_and_commit():
            for msg in msgs:
                self.consumer.store_offsets(msg)
            self.consumer.commit(asynchronous=False)
        await self._call(store_and_commit)

    async def close(self):
        if self.consumer is not None:
            await self._call(self.consumer.close)
        self.io.shutdown(wait=True)


class SourceUnavailable(RuntimeError):
    pass


async def find_stream(js, subject):
    import nats.js.errors
    try:
        return await js.find_stream_name_by_subject(subject)
    except nats.js.errors.NotFoundError:
        raise SourceUnavailable(f"nats: no JetStream stream stores subject {subject!r}; "
                                "create one (or give --stream NAME)") from None


# ---- targets ---------------------------------------------------------------------
class KafkaTarget:
    def __init__(self, opts, batch):
        from engine.kafka.producer import Publisher
        self.publisher = Publisher(opts, max(2 * batch, 1000), name="tracker-repeat")

    async def start(self):
        await self.publisher.start()

    async def deliver(self, items):
        """items: [(eid, vid, data)]; returns (acked eids, first error or None)."""
        delivery = await self.publisher.deliver(
            [(vid.encode() if vid else None, data, eid) for eid, vid, data in items])
        if delivery.complete:
            return {eid for eid, _, _ in items}, None, 0
        error = delivery.errors[0] if delivery.errors else "no answer in time"
        return delivery.acked, error, 0

    async def close(self):
        await self.publisher.close()


class NatsTarget:
    """JetStream publishes with ``Nats-Msg-Id = eid``, acknowledged by the stream."""

    def __init__(self, opts, subject, stream):
        self.opts, self.subject, self.stream = opts, subject, stream
        self.nc = self.js = None

    async def start(self):
        from engine.store.sinks.nats import connect
        self.nc = await connect(self.opts, "tracker-repeat")
        self.js = self.nc.jetstream(timeout=self.opts.timeout, publish_async_max_pending=8192)
        if self.stream:
            await self._ensure_stream()
        else:
            self.stream = await find_stream(self.js, self.subject)
        log.info("repeat target ready", target=f"nats:{self.subject}", stream=self.stream)

    async def _ensure_stream(self):
        import nats.js.errors
        from nats.js.api import StorageType, StreamConfig
        try:
            await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(StreamConfig(name=self.stream, subjects=[self.subject],
                                                  storage=StorageType.FILE))
            log.info("nats stream created", stream=self.stream, subjects=[self.subject])

    async def deliver(self, items):
        """Publish ``items``; (acked eids, first error or None, repeats the
        stream dropped). Fails at once while disconnected, and leaves the
        messages not acknowledged within Timeout for the retry."""
        if not self.nc.is_connected:
            return set(), "nats: not connected (reconnecting)", 0
        futures = []
        try:
            for eid, _vid, data in items:
                futures.append(await self.js.publish_async(
                    self.subject, data, stream=self.stream, headers={NATS_MSG_ID: eid}))
            await asyncio.wait(futures, timeout=self.opts.timeout)
        except Exception as exc:          # publishing itself failed (connection lost)
            error = repr(exc)
        else:
            error = None
        acked, duplicates = set(), 0
        for (eid, _, _), fut in zip(items, futures):
            if not fut.done():
                fut.cancel()
                error = error or f"no acknowledgement within {self.opts.timeout:g} s"
            elif fut.exception() is not None:
                error = error or repr(fut.exception())
            else:
                acked.add(eid)
                duplicates += bool(fut.result().duplicate)
        if len(futures) < len(items):
            error = error or "not every message was published"
        return acked, error, duplicates

    async def close(self):
        if self.nc is not None:
            await self.nc.close()


# ---- the loop ----------------------------------------------------------------------
class Repeater:
    def __init__(self, source, target, counts=None, stop_when_idle=0.0):
        self.source, self.target = source, target
        self.counts = counts or Counts()
        self.stop_when_idle = stop_when_idle
        self.stopping = asyncio.Event()

    def stop(self):
        self.stopping.set()

    async def run(self):
        idle_since = time.monotonic()
        backoff = BACKOFF_FIRST
        while not self.stopping.is_set():
            try:
                msgs = await self.source.fetch(1.0)
            except Exception as exc:        # the source is away: it reconnects
                log.warning("repeat source failed; retrying", error=repr(exc)[:300],
                            retry_in=backoff)
                await self._pause(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            if not msgs:
                if not await self.source.ready():
                    idle_since = time.monotonic()      # not idle: not yet assigned
                elif (self.stop_when_idle
                      and time.monotonic() - idle_since >= self.stop_when_idle):
                    log.info("repeat idle; stopping", seconds=self.stop_when_idle)
                    return
                continue
            if not await self.repeat(msgs):
                return                     # stopped while the target was failing
            idle_since = time.monotonic()

    def items_of(self, msgs):
        items = []
        for msg in msgs:
            header_eid, data = self.source.item(msg)
            try:
                eid, vid = identify(header_eid, data)
            except Malformed as exc:
                self.counts.malformed += 1
                log.warning("malformed message skipped", reason=str(exc),
                            data=bytes(data or b"")[:200].decode("utf-8", "replace"))
                continue
            items.append((eid, vid, data))
        return items

    async def repeat(self, msgs):
        """Deliver one group, then commit it at the source. False when asked
        to stop before the target took it all (nothing committed)."""
        self.counts.received += len(msgs)
        items = self.items_of(msgs)
        backoff, failed_since = BACKOFF_FIRST, 0.0
        beat = asyncio.get_running_loop().create_task(self._keep_alive(msgs))
        try:
            while items:
                try:
                    acked, error, duplicates = await self.target.deliver(items)
                except Exception as exc:     # e.g. the producer could not be made again
                    acked, error, duplicates = set(), repr(exc), 0
                self.counts.delivered += len(acked)
                self.counts.duplicates += duplicates
                items = [it for it in items if it[0] not in acked]
                if not items:
                    break
                # the first failure of a group is an error, its retries are debug
                (log.debug if failed_since else log.error)(
                    "repeat target failed; group kept for retry", error=str(error)[:300],
                    left=len(items), retry_in=backoff)
                failed_since = failed_since or time.monotonic()
                try:
                    await asyncio.wait_for(self.stopping.wait(), backoff)
                    return False
                except asyncio.TimeoutError:
                    backoff = min(2 * backoff, BACKOFF_MAX)
        finally:
            beat.cancel()
        if failed_since:
            log.info("repeat target recovered",
                     down_seconds=round(time.monotonic() - failed_since, 1))
        await self._commit(msgs)
        self.counts.groups += 1
        return True

    async def _pause(self, seconds):
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _keep_alive(self, msgs):
        interval = max(0.5, getattr(self.source, "ack_wait", 30) / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.source.keep_alive(msgs)
            except Exception as exc:
                log.debug("keep-alive failed", error=repr(exc))

    async def _commit(self, msgs):
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self.source.commit(msgs)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # delivered but not committed: a resumed repeater delivers the
                # group again (same eids); retrying the commit avoids that
                log.warning("repeat commit failed; retrying", error=repr(exc)[:300])
                if self.stopping.is_set():
                    return
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX)


# ---- wiring --------------------------------------------------------------------------
def options_from(cfg, service, hosts, subject=""):
    """The entry ``service`` has in the config (Notify first, then Consume),
    with ``hosts`` (a comma list) replacing its Hosts; ValueError when neither
    names hosts."""
    entry = {}
    if cfg is not None:
        for e in list(cfg.notify) + list(cfg.consume):
            if e.get("Service") == service:
                entry = dict(e)
                break
    if hosts:
        entry["Hosts"] = [h.strip() for h in hosts.split(",") if h.strip()]
    if not entry.get("Hosts"):
        raise ValueError(f"no {service} hosts: give --{service}-hosts or a --config with a "
                         f"{service} entry")
    if service == "kafka":
        return KafkaOptions.from_entry(entry, need_topic=False)
    from engine.nats.options import NatsOptions, check_entry
    # checked as a Notify entry publishing on the repeater's subject
    problems = check_entry("nats", {**entry, "Context": subject}, "Notify")
    if problems:
        raise ValueError("; ".join(problems))
    return NatsOptions.from_entry(entry)


def build(args, cfg):
    src, dst = parse_endpoint(args.source), parse_endpoint(args.target)
    if src.kind == dst.kind:
        raise ValueError(f"--from {src} --to {dst}: one side must be nats, the other kafka")
    nats_opts = options_from(cfg, "nats", args.nats_hosts,
                             src.name if src.kind == "nats" else dst.name)
    kafka_opts = options_from(cfg, "kafka", args.kafka_hosts)
    if src.kind == "nats":
        kafka_opts.topic, kafka_opts.partitions = dst.name, args.partitions
        return (NatsSource(nats_opts, src.name, args.durable, args.stream, args.batch,
                           args.ack_wait),
                KafkaTarget(kafka_opts, args.batch))
    kafka_opts.topic = src.name
    return (KafkaSource(kafka_opts, src.name, args.group, args.batch),
            NatsTarget(nats_opts, dst.name, args.stream))


async def main(args, cfg):
    """Run until SIGTERM/SIGINT (or idle); 0 when stopped, 1 when a side
    could not be reached at start."""
    from engine.store.sinks.base import SinkUnavailable
    source, target = build(args, cfg)
    counts = Counts()
    started = time.monotonic()
    try:
        await target.start()
        await source.start()
    except (SinkUnavailable, SourceUnavailable, OSError) as exc:
        log.error("repeat cannot start", error=str(exc))
        await _close(source, target)
        return 1
    repeater = Repeater(source, target, counts, args.stop_when_idle)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, repeater.stop)
    log.info("repeating", source=args.source, target=args.target, batch=args.batch)
    try:
        await repeater.run()
    finally:
        await _close(source, target)
        log.info("repeat stopped", seconds=round(time.monotonic() - started, 1),
                 received=counts.received, delivered=counts.delivered,
                 malformed=counts.malformed, duplicates_dropped=counts.duplicates,
                 groups=counts.groups)
    return 0


async def _close(source, target):
    for side in (source, target):
        try:
            await side.close()
        except Exception as exc:
            log.debug("close failed", error=repr(exc))
