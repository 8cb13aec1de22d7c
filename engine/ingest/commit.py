"""Group commit: answering tracked requests only once their events are durable.

``GroupCommitter`` sits between the request path and the batcher in
``spool`` durability. The request path appends the event to the spool's
open group and holds its response (``HttpConnection.hold``); one committer
task writes and fdatasyncs each group in the spool's I/O thread while the
next group fills, then hands the group's events to the batcher and releases
the held responses — 2xx if the write succeeded, 503 if it failed (those
events were never acknowledged, so the clients keep them).

It also carries the sinks' acknowledgements back to the spool file and
replays spool files left behind by dead workers (``adopt``).
"""
import asyncio

from engine.http.protocol import Commits
from engine.logs import log
from engine.spool import find_orphans, read_acks, remove_spool, write_acks
from engine.system.threads import named_executor

HIGH_WATER = 0.9     # of SpoolMaxBytes: refuse new events above this


class GroupCommitter(Commits):
    def __init__(self, spool, batcher, stats, unavailable):
        Commits.__init__(self, unavailable)
        self.spool = spool
        self.batcher = batcher
        self.stats = stats
        self.io = named_executor("spool")
        self.wake = asyncio.Event()
        self.lock = None             # one group in flight at a time (run vs flush)
        self.healthy = True
        self.pending_acks = {}
        self.ack_task = None
        self.tasks = []

    # ---- request path ----------------------------------------------------
    def append(self, event):
        """Spool the event; returns the epoch its answer waits for."""
        epoch = self.spool.append(event)
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
                if self.spool.group:
                    await self.commit_group(loop)

    def _lock(self):
        if self.lock is None:
            self.lock = asyncio.Lock()
        return self.lock

    async def commit_group(self, loop):
        epoch, data, group = self.spool.take_group()
        try:
            await loop.run_in_executor(self.io, self.spool.write_group, data, group[-1][0])
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
            put = self.batcher.put
            for seq, event in group:
                put(event, seq)
            self.stats.events += len(group)
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

    async def flush(self):
        """Commit whatever is open (drain). Waits for a group already being
        written first: its events reach the batcher only when that write ends,
        and the drain must not flush the batcher before."""
        async with self._lock():
            if self.spool.group:
                await self.commit_group(asyncio.get_running_loop())

    # ---- acknowledgements ------------------------------------------------
    def ack(self, sink_id, seq):
        self.pending_acks[sink_id] = max(seq, self.pending_acks.get(sink_id, 0))
        if self.ack_task is None or self.ack_task.done():
            self.ack_task = asyncio.get_running_loop().create_task(self._save_acks())

    async def _save_acks(self):
        loop = asyncio.get_running_loop()
        while self.pending_acks:
            acks, self.pending_acks = self.pending_acks, {}
            try:
                await loop.run_in_executor(self.io, self.spool.save_acks, acks)
            except OSError as exc:   # acks are an optimisation: replays are idempotent
                log.warning("could not save spool acknowledgements", error=str(exc))

    async def close(self):
        if self.ack_task is not None:
            await self.ack_task
        loop = asyncio.get_running_loop()
        delivered = await loop.run_in_executor(self.io, self.spool.close)
        for task in self.tasks:
            task.cancel()
        self.io.shutdown(wait=True)
        return delivered


class OrphanReplay:
    """Replays spool files whose owner died, then deletes them.

    Each orphan is read once, in order; every record goes to each sink whose
    acknowledgement in the file is below its seq. Progress is written back to
    the orphan's ``.acks`` as batches land, so a replay that is itself
    interrupted resumes where it stopped. Reading waits while a sink's queue
    is long, so memory stays bounded whatever the file's size.
    """

    def __init__(self, directory, own_paths, batcher, io, batch_size):
        self.directory = directory
        self.own_paths = own_paths
        self.batcher = batcher
        self.io = io
        self.batch_size = batch_size
        self.busy = set()

    async def scan(self):
        from engine.spool import SpoolReader
        for path, fd in find_orphans(self.directory, exclude=self.own_paths() | self.busy):
            self.busy.add(path)
            try:
                reader = SpoolReader(path)
            except ValueError as exc:
                log.error("not replaying an unreadable spool file", path=path, error=str(exc))
                os_close(fd)
                continue
            await self.replay(path, fd, reader)

    async def replay(self, path, fd, reader):
        acks = read_acks(path)
        channels = self.batcher.channels
        batches = {ch.sink_id: [] for ch in channels}
        state = {"outstanding": 0, "read_all": False, "acks": dict(acks), "count": 0}
        log.info("replaying the spool of a stopped worker", path=path)
        for seq, event in reader:
            state["count"] += 1
            for ch in channels:
                if seq > acks.get(ch.sink_id, 0):
                    batch = batches[ch.sink_id]
                    batch.append(event)
                    if len(batch) >= self.batch_size:
                        self._send(ch, batch, seq, path, fd, state)
                        batches[ch.sink_id] = []
            if state["count"] % self.batch_size == 0:
                await self._wait_for_room()
        last = state["count"] and seq
        for ch in channels:
            if batches[ch.sink_id]:
                self._send(ch, batches[ch.sink_id], last, path, fd, state)
        if reader.torn:
            log.warning("spool ended in a torn record (crash while writing); the "
                        "incomplete tail was skipped", path=path)
        state["read_all"] = True
        self._maybe_finish(path, fd, state)

    def _send(self, channel, batch, last_seq, path, fd, state):
        state["outstanding"] += 1

        def done():
            state["outstanding"] -= 1
            state["acks"][channel.sink_id] = last_seq
            # Progress on disk, so an interrupted replay resumes here.
            asyncio.get_running_loop().run_in_executor(
                self.io, write_acks, path, dict(state["acks"]))
            self._maybe_finish(path, fd, state)
        channel.enqueue(batch, done)

    def _maybe_finish(self, path, fd, state):
        if state["read_all"] and state["outstanding"] == 0:
            # Same single I/O thread as the ack writes: removal comes last.
            asyncio.get_running_loop().run_in_executor(self.io, finish_orphan, path, fd)
            self.busy.discard(path)
            log.info("spool replayed", path=path, events=state["count"])

    async def _wait_for_room(self):
        limit = self.batcher.queue_max // 2
        while any(ch.pending_events > limit for ch in self.batcher.channels):
            await asyncio.sleep(0.05)


def finish_orphan(path, fd):
    remove_spool(path)
    os_close(fd)


def os_close(fd):
    import os
    try:
        os.close(fd)
    except OSError:
        pass
