"""The HTTP worker process: one uvloop event loop serving the tracker routes.

Lifecycle: bind an own SO_REUSEPORT socket (after the fork), start the sinks,
start serving, tell the supervisor it is ready; on SIGTERM drain: stop
listening, let in-flight requests finish, flush every batch, exit 0.
"""
import asyncio
import ctypes
import os
import signal
import socket
import ssl
import time

import uvloop

from engine.batcher import Batcher
from engine.commit import GroupCommitter, OrphanReplay
from engine.spool import SpoolWriter
from engine.daily import DailyLimitUnavailable, build_checker
from engine.app import TrackerApp
from engine.http.protocol import ConnectionRegistry, HttpConnection
from engine.logs import configure, log
from engine.metrics import WorkerStats
from engine.sinks.registry import CriticalSinkDown, UnknownSink, build_sinks, start_sinks
from engine.parser import load_parser
from workers import EXIT_BOOT, EXIT_OK

TICK = 0.5
ORPHAN_SCAN_TICKS = 10      # look for dead workers' spool files every 5 s
PR_SET_PDEATHSIG = 1


class BootError(Exception):
    """The worker cannot start; the supervisor must not respawn it."""


def die_with_parent():
    """Ask Linux to SIGTERM this worker when the supervisor dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # the ticker's parent check still catches it


def bind_socket(host, port, backlog=4096):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BootError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def tls_context(config):
    if config.tls != "local":
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise BootError(f"cannot load TLSCert {config.tls_cert} / TLSKey "
                        f"{config.tls_key}: {exc}") from None
    return ctx


class HttpWorker:
    def __init__(self, config, index, ready_fd, shared, conn_slot):
        self.config = config
        self.index = index
        self.ready_fd = ready_fd
        self.shared = shared
        self.conn_slot = conn_slot
        self.parent = os.getppid()
        self.stop = None
        self.stats = WorkerStats()

    async def serve(self):
        cfg = self.config
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        ssl_ctx = tls_context(cfg)
        host, port = cfg.listen_tls if ssl_ctx else cfg.listen
        sock = bind_socket(host, port)
        try:
            sinks = build_sinks(cfg)
        except UnknownSink as exc:
            raise BootError(str(exc)) from None
        try:
            unstarted = await start_sinks(sinks)
        except CriticalSinkDown as exc:
            raise BootError(str(exc)) from None
        self.stats.bind()
        batcher = Batcher(sinks, self.stats, cfg.batch_max_events, cfg.batch_max_age_ms,
                          cfg.queue_max_events, unstarted)
        registry = ConnectionRegistry(cfg)
        registry.clock = loop.time()
        parser = load_parser()
        app = TrackerApp(cfg, batcher, self.stats, parser, parser.TimeUUIDGen(), registry,
                         self.shared, self.conn_slot, self.index)
        self.stats.gauges = lambda: (len(registry.open), batcher.waiting(),
                                     app.committer.spool.bytes_used if app.committer else 0)
        try:
            app.daily = build_checker(cfg, sinks)
        except DailyLimitUnavailable as exc:
            raise BootError(str(exc)) from None
        committer, orphans = self.open_spool(batcher)
        app.committer = committer
        server = await loop.create_server(
            lambda: HttpConnection(app, registry, tls=ssl_ctx is not None),
            sock=sock, ssl=ssl_ctx, backlog=4096)
        batcher.start()
        if committer is not None:
            committer.start()
        ticker = loop.create_task(self.tick(registry, orphans))
        os.write(self.ready_fd, b"R")
        log.info("worker serving", listen=f"{host}:{port}", index=self.index,
                 tls=ssl_ctx is not None, parser=parser.__name__)
        await self.stop.wait()
        ticker.cancel()
        await self.drain(app, server, registry, batcher, sinks)

    def open_spool(self, batcher):
        """Spool durability: this worker's write-ahead file, its committer, and
        the replayer of files dead workers left behind. (None, None) in memory
        durability."""
        cfg = self.config
        if cfg.durability != "spool":
            return None, None
        try:
            spool = SpoolWriter(cfg.spool_directory, [ch.sink_id for ch in batcher.channels],
                                cfg.spool_max_bytes)
        except OSError as exc:
            raise BootError(f"cannot write the spool in SpoolDirectory "
                            f"{cfg.spool_directory}: {exc.strerror}") from None
        committer = GroupCommitter(spool, batcher, self.stats)
        batcher.on_written = committer.ack
        orphans = OrphanReplay(cfg.spool_directory, lambda: {spool.path}, batcher,
                               committer.io, cfg.batch_max_events)
        return committer, orphans

    async def tick(self, registry, orphans):
        loop = asyncio.get_running_loop()
        ticks, scan = 0, None
        while True:
            if orphans is not None and ticks % ORPHAN_SCAN_TICKS == 0 and \
                    (scan is None or scan.done()):
                scan = loop.create_task(orphans.scan())
            ticks += 1
            await asyncio.sleep(TICK)
            registry.sweep(loop.time())
            self.stats.sync()
            if os.getppid() != self.parent:
                log.warning("supervisor gone; draining")
                self.stop.set()

    async def drain(self, app, server, registry, batcher, sinks):
        started = time.monotonic()
        timeout = self.config.drain_timeout
        app.draining = True
        server.close()
        for conn in list(registry.open):
            conn.drain()
        while registry.open and time.monotonic() - started < timeout * 0.5:
            await asyncio.sleep(0.05)
        for conn in list(registry.open):
            conn.close()
        if app.committer is not None:
            await app.committer.flush()
        left = await batcher.drain(max(0.5, timeout - (time.monotonic() - started)))
        if app.committer is not None and not await app.committer.close():
            log.warning("undelivered events stay in the spool for the next start",
                        path=app.committer.spool.path)
        self.stats.sync()
        for sink in sinks:
            # Bounded: a store stuck mid-write must not hold the exit past the
            # drain timeout (its batches are safe in the spool).
            remaining = max(0.5, timeout - (time.monotonic() - started))
            try:
                await asyncio.wait_for(sink.close(), remaining)
            except asyncio.TimeoutError:
                log.error("sink did not close in time", sink=sink.service)
            except Exception as exc:
                log.error("sink close failed", sink=sink.service, error=repr(exc))
        if left:
            log.error("drain timed out; events not written", pending=left)
        log.info("worker drained", seconds=round(time.monotonic() - started, 3))


def run(config, index, ready_fd, shared=None, conn_slot=0):
    """Entry point in the forked child; returns the process exit code.

    ``shared`` is the supervisor's SharedLimits (node-wide rate limits and
    connection counts); ``conn_slot`` this worker's slot in it.
    """
    if shared is None:   # run on its own: limits cover this process only
        from engine._bucket import SharedLimits
        shared = SharedLimits.create(1024)
    configure(config.effective_log_level, f"http-{index}")
    die_with_parent()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # reloads are the supervisor's
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(HttpWorker(config, index, ready_fd, shared, conn_slot).serve())
    except BootError as exc:
        log.error("worker cannot boot", reason=str(exc), index=index)
        return EXIT_BOOT
    finally:
        loop.close()
    return EXIT_OK
