"""Writing batches to one sink, in order, with its own retry and backoff.

``SinkChannel`` is how every batch reaches a store: the store stage
(engine/store/stage.py) hands it the batches it read from the spool, the NATS
consumer (workers/consume.py) its message groups. Each sink has its own
channel, so a slow or failing sink never holds back another; a batch that
fails stays at the head of its channel and is retried whole (sinks are
idempotent by eid, see engine/store/sinks/base.py).
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
