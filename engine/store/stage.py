"""One sink in a store process: spool records in, batches written, positions out.

``SinkStage.run`` loops: find new spool files (``SpoolTail.scan``), read and
decode records into the open batch while at most one batch waits for the
sink, hand the batch to the sink's ``SinkChannel`` (which writes it with its
own retry and backoff) once it holds ``BatchMaxEvents`` events or is
``BatchMaxAgeMs`` old, and when a batch is written save each file's position
and finish the files it completed. The disk is the queue: a slow or dead sink
only stops its own reading, so memory stays bounded by two batches whatever
the backlog, and no other sink waits for it.

Per record the work is the frame check (crc32 of the record, compiled) and
the compiled decode (engine._parse.decode), in one comprehension per file
read; the fan-out happens once per batch in the sink (engine/store/fanout.py).
"""
import asyncio
import time

from engine.logs import log
from engine.spool import legacy_sink_id, sink_id
from engine.store.agents import Agents
from engine.store.batcher import SinkChannel
from engine.store.fanout import Batch, unique
from engine.store.tail import SpoolTail
from engine.system.threads import named_executor

POLL = 0.01               # seconds between looks at the spool when idle


def stage_ids(sinks):
    """(sid, legacy sid) of every configured sink, in Notify order."""
    return [(sink_id(i, s.service), legacy_sink_id(i, s.service)) for i, s in enumerate(sinks)]


def owner(sink, store_index, store_count):
    """pid -> whether this store process reads that writer's files for ``sink``;
    None when this process does not run the sink at all. A sink that allows
    several writers (``multi_writer``) is shared out by writer pid; any other
    (SQLite) runs in store-0 only and reads every file."""
    if getattr(sink, "multi_writer", False) and store_count > 1:
        return lambda pid: pid % store_count == store_index
    if store_index == 0:
        return lambda pid: True
    return None


class SinkStage:
    def __init__(self, sink, index, config, stats, owns, all_sids, board=None):
        self.sink = sink
        self.index = index                    # in Notify
        self.sid = sink_id(index, sink.service)
        self.channel = SinkChannel(sink, stats, self.sid)
        self.channel.name = sink.service      # metric label and log name, as before
        self.tail = SpoolTail(config.spool_directory, self.sid,
                              legacy_sink_id(index, sink.service), all_sids, owns, board)
        self.io = named_executor(f"pos-{self.sid}"[:15])   # positions, deletions: in order
        # A sink may ask for larger or older batches than BatchMaxEvents and
        # BatchMaxAgeMs (SQLite: one transaction per batch, cheaper per event
        # the larger it is).
        self.max_events = getattr(sink, "batch_max_events", None) or config.batch_max_events
        self.max_age = (getattr(sink, "batch_max_age_ms", None) or config.batch_max_age_ms) / 1000
        self.open, self.marks, self.opened_at = [], {}, 0.0
        self.raws = []                        # the open batch's records: [(decode, [bytes])]
        self.agents = Agents(config.bots)     # user agents read, robots flagged or dropped
        self.last_read = 0
        self.behind = False                   # the last read was cut short: more waits
        self.io_pending = 0
        self.draining = False
        self.tasks = []

    # ---- the loop --------------------------------------------------------
    def start(self):
        loop = asyncio.get_running_loop()
        self.channel.task = loop.create_task(self.channel.run())
        self.tasks = [self.channel.task, loop.create_task(self.run())]

    async def run(self):
        while True:
            self.tail.scan(force=self.draining)
            if len(self.channel.pending) < 2:
                self.gather()
            if self.open or self.marks:
                full = len(self.open) >= self.max_events
                if full or self.draining or time.monotonic() - self.opened_at >= self.max_age:
                    self.flush()
            self.finish_files()
            await asyncio.sleep(0 if self.behind and not self.channel.pending else POLL)

    def gather(self):
        wanted = self.max_events - len(self.open)
        chunks = self.tail.read(wanted)
        self.last_read = read = sum(chunk[5] for chunk in chunks)
        # Only a full read means more is waiting. Caught up with the writers,
        # the next read waits a POLL: at a steady rate a read then takes a
        # POLL's worth of events instead of each commit group's few, and the
        # store process, often on an HTTP worker's core, spends less per event.
        self.behind = read == wanted
        if not chunks:
            return
        if not self.open and not self.marks:
            self.opened_at = time.monotonic()
        marks = self.marks
        keep = self.channel.spans              # the raw records rebuild a held batch
        for f, events, records, seq, end, count in chunks:
            self.open.extend(events)
            if keep and records:
                self.raws.append((f.decode, [payload for _s, payload, _e in records]))
            mark = marks.get(f)
            marks[f] = (seq, end, count if mark is None else mark[2] + count)

    def flush(self):
        events, marks, raws = self.open, self.marks, self.raws
        self.open, self.marks, self.raws = [], {}, []
        for f in marks:
            f.in_flight += 1
        # Only a full batch may share a transaction with the next ones: one
        # closed by its age means fewer than a batch per BatchMaxAgeMs, where
        # holding it would only delay the store's readers.
        full = len(events) >= self.max_events
        events = self.agents.apply(events)
        if not events:      # only undecodable records or robots dropped: acknowledged
            # in order, after the batches before it (its position covers theirs)
            self.channel.enqueue(Batch(), lambda: self._written(marks))
            return
        self.channel.enqueue(Batch(unique(events)), lambda: self._written(marks),
                             (lambda: self.rebuild(raws)) if full and raws else None)

    def rebuild(self, raws):
        """The batch of ``raws`` again (its transaction rolled back after the
        decoded events were let go)."""
        events = [decode(payload) for decode, chunk in raws for payload in chunk]
        return Batch(unique(self.agents.apply(events, again=True)))

    def _written(self, marks):
        saves = self.tail.note_written(marks)
        self._in_io(self.tail.save_positions, saves)

    def finish_files(self):
        for f in self.tail.finishable():
            self._in_io(self._finish, f)

    def _finish(self, f):
        if self.tail.finish(f):
            log.info("spool file delivered", path=f.path, sink=self.sid,
                     records=f.written_count)
        return f

    def _in_io(self, fn, arg):
        loop = asyncio.get_running_loop()
        self.io_pending += 1
        future = loop.run_in_executor(self.io, fn, arg)
        future.add_done_callback(self._io_done)

    def _io_done(self, future):
        self.io_pending -= 1
        exc = future.exception()
        if exc is not None:     # positions are an optimisation: a replay is idempotent
            log.warning("could not save a spool position", sink=self.sid, error=repr(exc))
            return
        result = future.result()
        if result is not None:
            self.tail.forget(result)

    # ---- state -----------------------------------------------------------
    @property
    def healthy(self):
        return self.channel.healthy

    def idle(self):
        """Nothing open, waiting, readable or being saved."""
        return not (self.open or self.marks or self.channel.pending or self.channel.held
                    or self.last_read
                    or self.io_pending or self.tail.finishable_count())

    async def drain(self, deadline):
        """Read every final file to its end and write it all, until
        ``deadline`` (monotonic); returns the records left unwritten. A file
        still being written (a reload stops the store processes while HTTP
        workers serve) is left at the position saved, for the next store."""
        self.draining = True
        self.tail.final_only = True
        self.channel.drain()
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            if self.idle():
                break
        left, _ = self.tail.lag(time.time_ns() // 1_000_000)
        for task in self.tasks:
            task.cancel()
        self.io.shutdown(wait=True)
        self.tail.close()
        return left
