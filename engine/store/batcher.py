"""Writing batches to one sink, in order, with its own retry and backoff.

``SinkChannel`` is how every batch reaches a store: the store stage
(engine/store/stage.py) hands it the batches it read from the spool, the NATS
consumer (workers/consume.py) its message groups. Each sink has its own
channel, so a slow or failing sink never holds back another; a batch that
fails stays at the head of its channel and is retried whole (sinks are
idempotent by eid, see engine/store/sinks/base.py).

A sink that says it ``spans`` (SQLite) may keep a full batch uncommitted and
write the next ones in the same transaction, up to ``span_events`` events or
``span_age_ms``: its commit's cost grows with the pages it dirties, not its
events. The channel acknowledges held batches (``on_done``: the spool
position) only once their transaction commits, keeps of each only what
rebuilds it (``redo``), and when the transaction rolls back puts them back at
its head, to be written again before the batch that failed. After a failure
nothing is held until a commit succeeds, so one bad batch cannot keep taking
good ones down with it.
"""
import asyncio
import time
from collections import deque

from engine.logs import log

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


class Entry:
    """A batch in the channel: pending (``batch`` set) or held (written in an
    open transaction; ``batch`` dropped, ``redo`` builds it again)."""
    __slots__ = ("batch", "on_done", "redo", "size", "seconds")

    def __init__(self, batch, on_done, redo):
        self.batch, self.on_done, self.redo = batch, on_done, redo
        self.size = len(batch)
        self.seconds = 0.0


class SinkChannel:
    """The ordered queue of batches waiting for one sink.

    Items are batches with an ``on_done`` (or None), called once the sink has
    stored the batch — the spool uses it to record the sink's progress — and
    a ``redo`` (or None), which builds the batch again: only a batch with one
    may be held in a spanning sink's open transaction. ``write`` is how a
    batch is stored (default: the sink's ``write_batch``; the NATS consumer
    passes its message writer), and ``stats.written(name, n, seconds)`` hears
    of every stored batch.
    """

    def __init__(self, sink, stats, sink_id, write=None):
        self.sink = sink
        self.write = write or sink.write_batch
        self.sink_id = sink_id
        self.name = sink.service
        self.stats = stats
        self.pending = deque()
        self.pending_events = 0
        self.held = []                     # Entries written, not yet committed
        self.held_events = 0
        self.held_since = 0.0
        self.spans = write is None and bool(getattr(sink, "spans", False))
        self.span_events = getattr(sink, "span_events", 0) or 0
        self.span_age = (getattr(sink, "span_age_ms", 0) or 0) / 1000
        self.draining = False              # commit what is held as soon as nothing waits
        self.wake = asyncio.Event()
        self.failing_since = 0.0
        self.started = True   # False: start() failed at boot, retried before writing
        self.task = None

    def enqueue(self, batch, on_done=None, redo=None):
        self.pending.append(Entry(batch, on_done, redo))
        self.pending_events += len(batch)
        self.wake.set()

    def drain(self):
        """From now on, commit held batches as soon as no batch waits."""
        self.draining = True
        self.wake.set()

    async def run(self):
        backoff = BACKOFF_FIRST
        while True:
            if not self.pending:
                if not self.held:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                left = self._hold_left()
                if left > 0 and not self.draining:
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), left)
                    except asyncio.TimeoutError:
                        pass
                    continue
                step, size = self._commit, self.held_events
            else:
                step, size = self._write_head, self.pending[0].size
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any sink error: keep the batches, retry
                self._rolled_back()
                self._failed(exc, size, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if not self.held:          # acknowledged
                backoff = BACKOFF_FIRST

    async def _write_head(self):
        entry = self.pending[0]
        if not entry.size:             # nothing to write (robots dropped): done in order,
            self.pending.popleft()     # with the held batches or at once
            self.held.append(entry)
            if len(self.held) == 1:
                self._acknowledge()
            return
        if entry.batch is None:        # held once, rolled back: built again
            entry.batch = entry.redo()
        if not self.started:
            await self.sink.start()
            self.started = True
        hold = self._may_hold(entry)
        started = time.monotonic()
        if hold:
            await self.write(entry.batch, hold=True)
        else:
            await self.write(entry.batch)
        entry.seconds = time.monotonic() - started
        self.pending.popleft()
        self.pending_events -= entry.size
        if hold:
            entry.batch = None         # its raw records (redo) are enough now
            if not self.held:
                self.held_since = started
            self.held.append(entry)
            self.held_events += entry.size
        else:                          # committed, with whatever was held
            self.held.append(entry)
            self._acknowledge()

    async def _commit(self):
        await self.sink.commit()
        self._acknowledge()

    def _may_hold(self, entry):
        return (self.spans and entry.redo is not None and not self.draining
                and not self.failing_since
                and self.held_events + entry.size < self.span_events
                and (not self.held or self._hold_left() > 0))

    def _hold_left(self):
        """Seconds the open transaction may still hold batches."""
        return self.held_since + self.span_age - time.monotonic()

    def _acknowledge(self):
        held, self.held, self.held_events = self.held, [], 0
        if self.spans and any(entry.size for entry in held):
            self.stats.committed(self.name)
        for entry in held:
            if entry.size:
                self.stats.written(self.name, entry.size, entry.seconds)
            if entry.on_done is not None:
                entry.on_done()
        if self.failing_since:
            log.info("sink recovered", sink=self.name,
                     down_seconds=round(time.monotonic() - self.failing_since, 1))
            self.failing_since = 0.0

    def _rolled_back(self):
        """The sink's transaction is gone, held batches with it: they go back
        to the head of the queue, in order, before the one that failed."""
        for entry in reversed(self.held):
            self.pending.appendleft(entry)
            self.pending_events += entry.size
        self.held, self.held_events = [], 0

    def _failed(self, exc, size, backoff):
        self.stats.failed(self.name)
        if not self.failing_since:
            self.failing_since = time.monotonic()
            log.error("sink write failed; batch kept for retry", sink=self.name,
                      events=size, error=repr(exc)[:300], retry_in=backoff)

    @property
    def healthy(self):
        return not self.failing_since
