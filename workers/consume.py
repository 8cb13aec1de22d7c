"""The NATS consumer process: bus messages into the stores.

The supervisor forks one of these when ``Consume`` has NATS entries. For
each entry it connects (reconnecting across ``Hosts`` for ever, as the NATS
sink does) and subscribes to every ``Filter`` subject with queue group
``tracker``, so several collectors share the messages, each delivered to one.

Messages are parsed into store-neutral records (engine/nats/messages.py) and
gathered in a ``MessageGroup`` (counts coalesced per id, updates to the
latest per id), flushed by size (``BatchMaxEvents``) or age
(``BatchMaxAgeMs``) to every Notify store that has ``write_messages``
(SQLite, Cassandra). Each store has its own ordered queue with retry and
backoff — engine.store.batcher's ``SinkChannel``, the same code the store
processes write the spool through — so a failing store neither blocks nor
double-writes another.

A malformed message is counted (``tracker_nats_messages_total{result=
"malformed"}``) and logged, never fatal. Memory is bounded: while more than
``QueueMaxEvents`` messages wait for the slowest store, the subscription
callbacks stop taking messages; the client then holds at most
``MessageLimit`` / ``BytesLimit`` per subscription and drops the rest as a
slow consumer (counted as ``result="dropped"``). Core NATS delivery is
at-most-once; this process adds no further loss while it runs, and on
SIGTERM it drains its subscriptions and writes what it holds.
"""
import asyncio
import os
import signal
import time

from engine.store.batcher import SinkChannel
from engine.logs import log
from engine.nats.messages import MessageError, MessageGroup, parse_count, parse_log, parse_update
from engine.nats.options import QUEUE_GROUP, NatsOptions
from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.nats import BACKOFF_FIRST, BACKOFF_MAX, connect
from engine.store.sinks.registry import CriticalSinkDown, SinkEntryError, build_sinks, start_sinks
from workers.base import BootError, report_ready, run_async

TICK = 0.5
MALFORMED_LOGS_PER_TICK = 50


def nats_entries(config):
    return [e for e in config.consume if isinstance(e, dict) and e.get("Service") == "nats"]


class ConsumeStats:
    """Plain counters, moved into shared prometheus counters every tick."""

    def __init__(self):
        self.messages = {}     # (alias, result) -> n
        self.sink_written = {}
        self.sink_failed = {}
        self._metrics = None

    def message(self, alias, result, n=1):
        key = (alias, result)
        self.messages[key] = self.messages.get(key, 0) + n

    def written(self, sink, n, seconds=0.0):
        self.sink_written[sink] = self.sink_written.get(sink, 0) + n

    def failed(self, sink):
        self.sink_failed[sink] = self.sink_failed.get(sink, 0) + 1

    def bind(self):
        from prometheus_client import Counter
        self._metrics = {
            "messages": Counter("tracker_nats_messages_total",
                                "NATS messages received by the consumer, by result "
                                "(accepted, malformed, dropped)", ["alias", "result"]),
            "written": Counter("tracker_nats_messages_written_total",
                               "Consumed messages written by a store", ["sink"]),
            "failed": Counter("tracker_nats_message_write_failures_total",
                              "Failed message-group writes (retried)", ["sink"]),
        }

    def sync(self):
        m = self._metrics
        if m is None:
            return
        messages, self.messages = self.messages, {}
        for (alias, result), n in messages.items():
            m["messages"].labels(alias, result).inc(n)
        for attr, name in (("sink_written", "written"), ("sink_failed", "failed")):
            counts = getattr(self, attr)
            setattr(self, attr, {})
            for sink, n in counts.items():
                m[name].labels(sink).inc(n)


class Consumer:
    def __init__(self, config, index, ready_fd):
        self.config = config
        self.index = index
        self.ready_fd = ready_fd
        self.parent = os.getppid()
        self.stats = ConsumeStats()
        self.group = MessageGroup()
        self.channels = []
        self.connections = []      # connected clients
        self.tasks = []
        self.stop = None
        self.stopping = False
        self.malformed_logged = 0
        self.malformed_suppressed = 0
        self.name = "tracker-consume-%d" % os.getpid()

    # ---- start -----------------------------------------------------------
    async def start_stores(self):
        try:
            sinks = build_sinks(self.config)
        except SinkEntryError as exc:
            raise BootError(str(exc)) from None
        stores = [s for s in sinks if callable(getattr(s, "write_messages", None))]
        if not stores:
            raise BootError("Consume has NATS entries but no Notify store keeps messages "
                            "(services with write_messages: sqlite)")
        try:
            unstarted = await start_sinks(stores, waiting="messages")
        except CriticalSinkDown as exc:
            raise BootError(str(exc)) from None
        for sink in stores:
            channel = SinkChannel(sink, self.stats, sink.service, write=(
                lambda group, sink=sink: sink.write_messages(*group.records())))
            if sink in unstarted:
                channel.started = False
                channel.failing_since = time.monotonic()
            self.channels.append(channel)

    async def start_connections(self):
        for i, entry in enumerate(nats_entries(self.config)):
            opts = NatsOptions.from_entry(entry)
            try:
                await self.connect_and_subscribe(opts, i)
            except SinkUnavailable as exc:
                if opts.critical:
                    raise BootError(f"critical NATS consume entry unavailable: {exc}") from None
                log.error("nats unavailable at start; retrying in the background",
                          error=str(exc))
                self.tasks.append(asyncio.get_running_loop().create_task(
                    self.connect_later(opts, i)))

    async def connect_later(self, opts, i):
        backoff = BACKOFF_FIRST
        while not self.stopping:
            await asyncio.sleep(backoff)
            try:
                await self.connect_and_subscribe(opts, i)
                return
            except SinkUnavailable as exc:
                log.debug("nats still unavailable", error=str(exc))
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def connect_and_subscribe(self, opts, i):
        aliases = {}

        def on_error(exc):
            sub = getattr(exc, "sub", None)
            if sub is not None and type(exc).__name__ == "SlowConsumerError":
                self.stats.message(aliases.get(sub._id, "unknown"), "dropped")

        nc = await connect(opts, f"{self.name}-{i}", on_error=on_error)
        try:
            for alias, subject in opts.filters:
                sub = await nc.subscribe(subject, queue=QUEUE_GROUP, cb=self.handler(alias),
                                         pending_msgs_limit=opts.message_limit,
                                         pending_bytes_limit=opts.bytes_limit)
                aliases[sub._id] = alias
            await nc.flush(timeout=opts.timeout)
        except Exception as exc:
            await nc.close()
            raise SinkUnavailable(f"nats: cannot subscribe: {exc!r}") from None
        self.connections.append(nc)
        log.info("nats consuming", subjects=[s for _, s in opts.filters], queue=QUEUE_GROUP)

    # ---- messages --------------------------------------------------------
    def handler(self, alias):
        if alias == "log":
            def take(data):
                self.group.add_log(parse_log(data))
        elif alias == "count":
            def take(data):
                self.group.add_count(parse_count(data))
        else:
            def take(data):
                self.group.add_update(parse_update(data))
        batch_max = self.config.batch_max_events
        backlog_max = self.config.queue_max_events

        async def on_message(msg):
            try:
                take(msg.data)
            except MessageError as exc:
                self.malformed(alias, msg, str(exc))
                return
            except Exception as exc:   # a bug must not stop consuming
                self.malformed(alias, msg, repr(exc)[:200])
                return
            self.stats.message(alias, "accepted")
            if len(self.group) >= batch_max:
                self.flush()
            while self.backlog() >= backlog_max and not self.stopping:
                await asyncio.sleep(0.05)   # stores behind: stop taking messages
        return on_message

    def malformed(self, alias, msg, reason):
        self.stats.message(alias, "malformed")
        if self.malformed_logged < MALFORMED_LOGS_PER_TICK:
            self.malformed_logged += 1
            log.warning("malformed nats message; skipped", alias=alias, subject=msg.subject,
                        reason=reason, data=msg.data[:200].decode("utf-8", "replace"))
        else:
            self.malformed_suppressed += 1

    def backlog(self):
        return len(self.group) + max((ch.pending_events for ch in self.channels), default=0)

    def flush(self):
        if len(self.group):
            group, self.group = self.group, MessageGroup()
            for ch in self.channels:
                ch.enqueue(group)

    # ---- run -------------------------------------------------------------
    async def serve(self):
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.stats.bind()
        await self.start_stores()
        await self.start_connections()
        for ch in self.channels:
            ch.task = loop.create_task(ch.run())
        timer = loop.create_task(self.timer())
        ticker = loop.create_task(self.tick())
        report_ready(self.ready_fd)
        log.info("consumer running", entries=len(nats_entries(self.config)),
                 stores=[ch.name for ch in self.channels])
        await self.stop.wait()
        await self.drain()
        timer.cancel()
        ticker.cancel()

    async def timer(self):
        age = self.config.batch_max_age_ms / 1000
        while True:
            await asyncio.sleep(age)
            self.flush()

    async def tick(self):
        while True:
            await asyncio.sleep(TICK)
            self.stats.sync()
            if self.malformed_suppressed:
                log.warning("malformed nats messages not logged individually",
                            count=self.malformed_suppressed)
                self.malformed_suppressed = 0
            self.malformed_logged = 0
            if os.getppid() != self.parent:
                log.warning("supervisor gone; draining")
                self.stop.set()

    async def drain(self):
        started = time.monotonic()
        timeout = self.config.drain_timeout
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        for nc in self.connections:
            try:   # unsubscribe, hand pending messages to the callbacks, close
                await asyncio.wait_for(nc.drain(), max(0.5, timeout * 0.5))
            except Exception as exc:
                log.warning("nats drain incomplete", error=repr(exc)[:200])
                try:
                    await nc.close()
                except Exception:
                    pass
        self.flush()
        deadline = started + timeout
        while any(ch.pending for ch in self.channels) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = {ch.name: ch.pending_events for ch in self.channels if ch.pending}
        for ch in self.channels:
            if ch.task is not None:
                ch.task.cancel()
            try:
                await ch.sink.close()
            except Exception as exc:
                log.error("store close failed", sink=ch.name, error=repr(exc))
        self.stats.sync()
        if left:
            log.error("drain timed out; messages not written", pending=left)
        log.info("consumer drained", seconds=round(time.monotonic() - started, 3))


def run(config, index, ready_fd, slot=None):
    """Entry point in the forked child; returns the process exit code."""
    consumer = Consumer(config, index, ready_fd)
    return run_async(config, f"consume-{index}", consumer.serve, slot, "consume", index,
                     boot_message="consumer cannot boot")
