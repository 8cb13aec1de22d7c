"""The store process: the spool's records into every sink.

The supervisor runs ``StoreWorkers`` of these (default 1), as
``tracker: store-<i>``. Each builds the Notify sinks it runs — SQLite (one
writer, always) only in store-0; a sink that allows several writers
(``multi_writer``: Cassandra, NATS, plug-ins that say so) in every store
process, each reading its share of the spool files (by writer pid modulo
``StoreWorkers``) — and runs one ``SinkStage`` per sink (engine/store/stage.py):
tail, batch, write with retry and backoff, save the position, delete what
every sink has written.

Liveness and health on the worker board (engine/board.py): a heartbeat, and
the ``down`` bits of the sinks whose writes fail here, which the HTTP
workers' ``/ready`` reads for Critical sinks.

Stopping: the supervisor sends SIGTERM only after the last HTTP worker has
exited, so every spool file is final; the process reads them to their end
and writes what it can within ``DrainTimeoutSeconds``. What is left stays in
the spool for the next start. Killed with SIGKILL instead, it is replaced;
the replacement starts at each sink's saved position, so a batch written but
not yet acknowledged is written again: SQLite skips it by eid, Cassandra's
rows are rewritten identically (its counters: engine/store/sinks/cassandra.py).
"""
import asyncio
import os
import signal
import time

from engine.logs import log
from engine.metrics import StoreStats
from engine.spool import is_final, remove_spool, spool_files
from engine.store import retention
from engine.store.sinks.registry import CriticalSinkDown, SinkEntryError, build_sinks, start_sinks
from engine.store.stage import SinkStage, owner, stage_ids
from workers.base import BootError, report_ready, run_async

TICK = 0.5


class StoreWorker:
    def __init__(self, config, index, count, ready_fd, board=None, slot=None):
        self.config = config
        self.index = index
        self.count = count
        self.ready_fd = ready_fd
        self.board = board
        self.slot = slot
        self.parent = os.getppid()
        self.stats = StoreStats()
        self.stages = []
        self.sinks = []
        self.stop = None

    async def serve(self):
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        await self.build_stages()
        self.stats.bind()
        for stage in self.stages:
            stage.start()
        ticker = loop.create_task(self.tick())
        pruner = loop.create_task(self.prune()) if self.prunes() else None
        report_ready(self.ready_fd)
        log.info("store serving", index=self.index, sinks=[s.sid for s in self.stages])
        await self.stop.wait()
        ticker.cancel()
        if pruner is not None:
            pruner.cancel()
        await self.drain()

    async def build_stages(self):
        try:
            sinks = build_sinks(self.config)
        except SinkEntryError as exc:
            raise BootError(str(exc)) from None
        all_sids = stage_ids(sinks)
        mine = [(i, s, owner(s, self.index, self.count)) for i, s in enumerate(sinks)]
        mine = [m for m in mine if m[2] is not None]
        try:
            unstarted = await start_sinks([s for _, s, _ in mine])
        except CriticalSinkDown as exc:
            raise BootError(str(exc)) from None
        for i, sink, owns in mine:
            stage = SinkStage(sink, i, self.config, self.stats, owns, all_sids, self.board)
            if sink in unstarted:
                stage.channel.started = False
                stage.channel.failing_since = time.monotonic()
            self.stages.append(stage)
        self.sinks = [s for _, s, _ in mine]
        self.discard = not sinks and self.index == 0    # Notify: [] — nothing keeps events

    async def tick(self):
        while True:
            await asyncio.sleep(TICK)
            self.publish_health()
            now_ms = time.time_ns() // 1_000_000
            for stage in self.stages:
                self.stats.lag[stage.channel.name] = stage.tail.lag(now_ms)
            self.stats.sync()
            if self.discard:
                discard_final_files(self.config.spool_directory)
            if os.getppid() != self.parent:
                log.warning("supervisor gone; draining")
                self.stop.set()

    def prunes(self):
        """Store 0 prunes the embedded store when RetentionDays is set."""
        return bool(self.config.retention_days) and any(
            s.service == "sqlite" for s in self.sinks)

    async def prune(self):
        """RetentionDays for SQLite (engine/store/retention.py), in a thread:
        at start, then every retention.EVERY seconds."""
        loop = asyncio.get_running_loop()
        paths = [s.path for s in self.sinks if s.service == "sqlite"]
        while True:
            for path in paths:
                try:
                    deleted = await loop.run_in_executor(
                        None, retention.prune_sqlite, path, self.config.retention_days)
                    if deleted:
                        log.info("retention pruned the embedded store", path=path,
                                 days=self.config.retention_days, deleted=deleted)
                except Exception as exc:       # retried at the next round
                    log.warning("retention pruning failed", path=path, error=repr(exc)[:300])
            await asyncio.sleep(retention.EVERY)

    def publish_health(self):
        if self.slot is None:
            return
        down = 0
        for stage in self.stages:
            if not stage.healthy and stage.index < 64:
                down |= 1 << stage.index
        self.slot.set_down(down)

    async def drain(self):
        started = time.monotonic()
        deadline = started + self.config.drain_timeout
        left = await asyncio.gather(*(stage.drain(deadline) for stage in self.stages))
        if self.discard:
            discard_final_files(self.config.spool_directory)
        for sink in self.sinks:
            remaining = max(0.5, deadline - time.monotonic())
            try:      # bounded: a store stuck mid-write must not hold the exit
                await asyncio.wait_for(sink.close(), remaining)
            except asyncio.TimeoutError:
                log.error("sink did not close in time", sink=sink.service)
            except Exception as exc:
                log.error("sink close failed", sink=sink.service, error=repr(exc))
        self.stats.lag = {stage.channel.name: (0, 0.0) for stage in self.stages}
        self.stats.sync()
        unwritten = {stage.sid: n for stage, n in zip(self.stages, left) if n}
        if unwritten:
            log.warning("undelivered events stay in the spool for the next start",
                        pending=unwritten)
        log.info("store drained", seconds=round(time.monotonic() - started, 3))


def discard_final_files(directory):
    """No sink is configured: a finished spool file has nothing to wait for."""
    for path in spool_files(directory):
        if is_final(path):
            remove_spool(path)


def run(config, index, count, ready_fd, board=None, slot=None):
    """Entry point in the forked child; returns the process exit code."""
    worker = StoreWorker(config, index, count, ready_fd, board, slot)
    return run_async(config, f"store-{index}", worker.serve, slot, "store", index,
                     boot_message="store cannot boot")
