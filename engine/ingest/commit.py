"""Group commit: answering tracked requests only once their events are in the spool.

The request path appends the event's record to the spool's open group and
holds its response (``HttpConnection.hold``); one committer task writes
(and, in ``"Durability": "spool"``, fdatasyncs) each group in the spool's
I/O thread while the next group fills, publishes the committed offset on the
worker board for the store processes, then releases the group's held
responses — 2xx if the write succeeded, 503 if it failed (those events were
never acknowledged, so the clients keep them).

Nothing here writes a store: the store processes (workers/store.py) read
the spool. The worker only keeps its own disk use in check: past
``HIGH_WATER`` of ``SpoolMaxBytes`` (its files still on disk, re-measured
every tick, plus the open group) track routes answer 503 and /ready says so.
"""
import asyncio

from engine.http.protocol import Commits
from engine.logs import log
from engine.system.threads import named_executor

HIGH_WATER = 0.9     # of SpoolMaxBytes: refuse new events above this


class GroupCommitter(Commits):
    def __init__(self, spool, stats, unavailable):
        Commits.__init__(self, unavailable)
        self.spool = spool
        self.stats = stats
        self.io = named_executor("spool")
        self.wake = asyncio.Event()
        self.lock = None             # one group in flight at a time (run vs flush)
        self.healthy = True
        self.tasks = []

    # ---- request path ----------------------------------------------------
    def append(self, payload):
        """Spool one record; returns the epoch its answer waits for."""
        epoch = self.spool.append(payload)
        self.wake.set()
        return epoch

    @property
    def accepting(self):
        return self.healthy and \
            self.spool.bytes_used < HIGH_WATER * self.spool.max_bytes

    # ---- committer -------------------------------------------------------
    def start(self):
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self.run()))

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            async with self._lock():
                if self.spool.pending:
                    await self.commit_group(loop)

    def _lock(self):
        if self.lock is None:
            self.lock = asyncio.Lock()
        return self.lock

    async def commit_group(self, loop):
        epoch, data, count = self.spool.take_group()
        try:
            await loop.run_in_executor(self.io, self.spool.write_group, data)
        except OSError as exc:
            self.failed_epochs.add(epoch)
            if self.healthy:
                log.error("spool write failed; answering 503 until it works again",
                          path=self.spool.path, error=str(exc))
            self.healthy = False
            loop.call_later(1.0, self._probe)
        else:
            if not self.healthy:
                log.info("spool writable again", path=self.spool.path)
            self.healthy = True
            self.stats.events += count
        self.done_epoch = epoch
        if len(self.failed_epochs) > 1000:
            self.failed_epochs = {e for e in self.failed_epochs if e > epoch - 100}
        waiting, self.waiting = self.waiting, []
        for conn in waiting:
            conn.release()

    def _probe(self):
        """After a failed write, let traffic try again (a full disk may have
        been cleared)."""
        self.healthy = True

    def tick(self):
        """Every worker tick: re-measure the files the store has not deleted."""
        self.spool.refresh_usage()

    async def flush(self):
        """Commit whatever is open (drain), after a group already being written."""
        async with self._lock():
            if self.spool.pending:
                await self.commit_group(asyncio.get_running_loop())

    async def close(self):
        """Close the current file: it becomes final, for the store to finish."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.io, self.spool.close)
        for task in self.tasks:
            task.cancel()
        self.io.shutdown(wait=True)
