"""Batching events from the request path to every sink.

``put`` is synchronous and cheap: it appends to the open batch. A flush
(by size, or by age from the flush timer) hands the batch to one
``SinkChannel`` per sink; each channel writes its batches in order with its
own retry and backoff, so a slow or failing sink never holds back another.

In ``"Durability": "memory"`` an accepted event lives only in this process
until its batch is written: a crash loses at most the open batch
(``BatchMaxAgeMs``, default 250 ms of traffic) plus batches a failing sink has
not yet taken. In ``spool`` (the default) events reach the batcher only once
they are in the fsynced spool (engine/ingest/commit.py), which replays what a crash
left behind. Memory is bounded: once ``QueueMaxEvents``
events wait, ``accepting`` turns false and track routes answer 503 instead of
acknowledging events that could not be kept.
"""
import asyncio
import time
from collections import deque

from engine.logs import log

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


class SinkChannel:
    """The ordered queue of batches waiting for one sink.

    Items are (batch, on_done): ``on_done`` (or None) is called once the
    sink has stored the batch — the spool uses it to record the sink's
    progress. ``write`` is how a batch is stored (default: the sink's
    ``write_batch``; the NATS consumer passes its message writer), and
    ``stats.written(name, n, seconds)`` hears of every stored batch.
    """

    def __init__(self, sink, stats, sink_id, write=None):
        self.sink = sink
        self.write = write or sink.write_batch
        self.sink_id = sink_id
        self.name = sink.service
        self.stats = stats
        self.pending = deque()
        self.pending_events = 0
        self.wake = asyncio.Event()
        self.failing_since = 0.0
        self.started = True   # False: start() failed at boot, retried before writing
        self.task = None

    def enqueue(self, batch, on_done=None):
        self.pending.append((batch, on_done))
        self.pending_events += len(batch)
        self.wake.set()

    async def run(self):
        backoff = BACKOFF_FIRST
        while True:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
                continue
            batch, on_done = self.pending[0]
            started = time.monotonic()
            try:
                if not self.started:
                    await self.sink.start()
                    self.started = True
                await self.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any sink error: keep the batch, retry
                self._failed(exc, len(batch), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.pending.popleft()
            self.pending_events -= len(batch)
            self.stats.written(self.name, len(batch), time.monotonic() - started)
            if on_done is not None:
                on_done()
            if self.failing_since:
                log.info("sink recovered", sink=self.name,
                         down_seconds=round(time.monotonic() - self.failing_since, 1))
                self.failing_since = 0.0
            backoff = BACKOFF_FIRST

    def _failed(self, exc, size, backoff):
        self.stats.failed(self.name)
        if not self.failing_since:
            self.failing_since = time.monotonic()
            log.error("sink write failed; batch kept for retry", sink=self.name,
                      events=size, error=repr(exc)[:300], retry_in=backoff)

    @property
    def healthy(self):
        return not self.failing_since


class Batcher:
    def __init__(self, sinks, stats, max_events=1000, max_age_ms=250, queue_max=200000,
                 unstarted=()):
        self.channels = [SinkChannel(s, stats, f"{i}:{s.service}") for i, s in enumerate(sinks)]
        for ch in self.channels:
            if ch.sink in unstarted:
                ch.started = False
                ch.failing_since = time.monotonic()
        self.stats = stats
        self.max_events = max_events
        self.max_age = max_age_ms / 1000.0
        self.queue_max = queue_max
        self.batch = []
        self.batch_seq = 0          # spool seq of the batch's last event (0: no spool)
        self.on_written = None      # (sink_id, seq) -> None, set by the spool
        self.accepting = True
        self.flush_now = asyncio.Event()
        self.tasks = []

    # ---- request path ----------------------------------------------------
    def put(self, event, seq=0):
        batch = self.batch
        batch.append(event)
        self.batch_seq = seq
        if len(batch) >= self.max_events:
            self.flush_now.set()

    # ---- background ------------------------------------------------------
    def start(self):
        loop = asyncio.get_running_loop()
        for ch in self.channels:
            ch.task = loop.create_task(ch.run())
            self.tasks.append(ch.task)
        self.tasks.append(loop.create_task(self._timer()))

    async def _timer(self):
        while True:
            try:
                await asyncio.wait_for(self.flush_now.wait(), self.max_age)
            except asyncio.TimeoutError:
                pass
            self.flush_now.clear()
            self.flush()

    def flush(self):
        if self.batch:
            batch, self.batch = self.batch, []
            seq, notify = self.batch_seq, self.on_written
            for ch in self.channels:
                done = None
                if seq and notify is not None:
                    done = (lambda sid: lambda: notify(sid, seq))(ch.sink_id)
                ch.enqueue(batch, done)
        self.accepting = self.waiting() < self.queue_max

    def waiting(self):
        """Events accepted but not yet written to every sink."""
        most = max((ch.pending_events for ch in self.channels), default=0)
        return len(self.batch) + most

    async def drain(self, timeout):
        """Flush and wait until every sink has taken everything, or timeout."""
        self.flush()
        deadline = time.monotonic() + timeout
        while any(ch.pending for ch in self.channels) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = {ch.name: ch.pending_events for ch in self.channels if ch.pending}
        for task in self.tasks:
            task.cancel()
        return left
