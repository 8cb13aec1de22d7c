"""The HTTP worker process: one uvloop event loop serving the tracker routes.

Lifecycle: bind an own SO_REUSEPORT socket (after the fork), open its spool
file and start its committer thread (engine/ingest/_spool.pyx), start
serving, tell the supervisor it is ready; on SIGTERM drain: stop listening,
let in-flight requests finish, settle the open group, close the spool file
(final: the store processes finish it), exit 0.

It parses, spools and answers; it imports no sink and holds no store
connection or store file. The one exception is ``ProxyDailyLimit``'s
read-only look at the ``dailies`` counter (engine/limits/daily.py).
"""
import asyncio
import os
import signal
import socket
import time

from engine.ingest._spool import SpoolWriter
from engine.ingest._track import TrackRoutes
from engine.ingest.admin import AdminApp
from engine.ingest.app import TrackerApp
from engine.limits.daily import DailyLimitUnavailable, build_checker
from engine.tls.acmefiles import certificate_path
from engine.tls.plainport import PlainPortApp
from engine.tls.context import CertificateError, LiveCertificate, read_pair, server_context
from engine.http.protocol import ConnectionRegistry, HttpConnection
from engine.logs import log
from engine.metrics import WorkerStats
from workers.base import BootError, report_ready, run_async

TICK = 0.5
TLS_BIND_RETRY = 10.0       # seconds between tries to open a late TLS listener


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


def worker_certificate(config):
    """The watched certificate files and their live TLS context; None without TLS.

    Local files must load now (a bad path or pair stops the boot with the
    reason). The ACME certificate may not exist yet on a first start: the
    worker then serves the plain port (answering the CA's challenges) and
    opens the TLS port once the ACME process has written it.
    """
    if config.tls == "off":
        return None
    ctx = server_context()
    if config.tls == "local":
        cert = LiveCertificate(ctx, config.tls_cert, config.tls_key)
    else:
        cert = LiveCertificate(ctx, certificate_path(config.acme_cache_directory))
    try:
        if not cert.refresh() and config.tls == "local":
            read_pair(config.tls_cert, config.tls_key)     # says what is missing
    except CertificateError as exc:
        if config.tls == "local":
            raise BootError(f"cannot load TLSCert {config.tls_cert} / TLSKey "
                            f"{config.tls_key}: {exc}") from None
        log.error("cached ACME certificate unusable; waiting for a new one", reason=str(exc))
    return cert


class HttpWorker:
    def __init__(self, config, index, ready_fd, shared, conn_slot, board=None, slot=None):
        self.config = config
        self.board = board
        self.slot = slot
        self.index = index
        self.ready_fd = ready_fd
        self.shared = shared
        self.conn_slot = conn_slot
        self.parent = os.getppid()
        self.stop = None
        self.stats = WorkerStats()
        self.servers = []           # the asyncio servers this worker listens with
        self.cert = None            # LiveCertificate when serving TLS
        self.tls_server = None
        self.tls_retry_at = 0.0

    async def serve(self):
        cfg = self.config
        loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.cert = worker_certificate(cfg)
        sock = bind_socket(*cfg.listen)
        tls_sock = bind_socket(*cfg.listen_tls) if self.cert and self.cert.loaded else None
        admin_sock = bind_socket(*cfg.admin_address) if cfg.admin_address else None
        self.stats.bind()
        registry = ConnectionRegistry(cfg)
        registry.clock = loop.time()
        app = TrackerApp(cfg, self.stats, registry, self.shared, self.conn_slot, self.index,
                         self.board)
        try:
            app.admission.daily = build_checker(cfg)
        except DailyLimitUnavailable as exc:
            raise BootError(str(exc)) from None
        spool = self.open_spool()
        pure = os.environ.get("TRACKER_PURE_PARSE") == "1"
        fast = TrackRoutes(app, spool, pure=pure)
        app.attach(spool, fast)
        self.stats.sources.append(fast.drain_stats)
        self.stats.sources.append(registry.drain_accepted)
        self.stats.gauges = lambda: (len(registry.open), spool.pending_records, spool.used)
        self.stats.spool_limit = cfg.spool_max_bytes
        # A draining worker no longer listens: no probe reaches it, so it
        # does not pull the node's tracker_ready (livemin) down during a reload.
        self.stats.ready = lambda: app.draining or app.not_ready_reason() is None
        await self.listen(app, registry, sock, tls_sock)
        if admin_sock is not None:
            admin = AdminApp(app)
            self.servers.append(await loop.create_server(
                lambda: HttpConnection(admin, registry), sock=admin_sock, backlog=1024))
        spool.start(loop)
        ticker = loop.create_task(self.tick(registry, spool))
        self.stats.sync()     # tracker_ready starts at 0 until a sync sets it
        report_ready(self.ready_fd)
        log.info("worker serving", listen="%s:%d" % cfg.listen, index=self.index,
                 tls=cfg.tls, listen_tls="%s:%d" % cfg.listen_tls if tls_sock else None,
                 admin="%s:%d" % cfg.admin_address if admin_sock else None,
                 parser="engine.parse_ref" if pure else "engine._parse")
        await self.stop.wait()
        ticker.cancel()
        await self.drain(app, registry, spool)

    async def listen(self, app, registry, sock, tls_sock):
        """Without TLS the tracker answers on the plain port; with TLS it
        answers on the TLS port and the plain port redirects (engine/tls/plainport.py)."""
        loop = asyncio.get_running_loop()
        self.app, self.registry = app, registry
        if self.cert is None:
            self.servers.append(await loop.create_server(
                lambda: HttpConnection(app, registry), sock=sock, backlog=4096))
            return
        plain = PlainPortApp(self.config, app)
        self.servers.append(await loop.create_server(
            lambda: HttpConnection(plain, registry), sock=sock, backlog=4096))
        if tls_sock is not None:
            await self.serve_tls(tls_sock)

    async def serve_tls(self, tls_sock):
        app, registry = self.app, self.registry
        self.tls_server = await asyncio.get_running_loop().create_server(
            lambda: HttpConnection(app, registry, tls=True),
            sock=tls_sock, ssl=self.cert.ctx, backlog=4096)
        self.servers.append(self.tls_server)

    async def watch_certificate(self):
        """Reload changed certificate files into the live context; open the
        TLS listener once the first ACME certificate is there."""
        try:
            replaced = self.tls_server is not None   # else the first one (ACME start)
            if self.cert.refresh():
                log.info("certificate loaded", path=self.cert.cert_path, replaced=replaced)
        except CertificateError as exc:
            log.error("new certificate not loaded; serving the previous one",
                      path=self.cert.cert_path, reason=str(exc))
        now = time.monotonic()
        if self.cert.loaded and self.tls_server is None and now >= self.tls_retry_at:
            try:
                await self.serve_tls(bind_socket(*self.config.listen_tls))
                log.info("TLS listener open", listen="%s:%d" % self.config.listen_tls)
            except BootError as exc:
                self.tls_retry_at = now + TLS_BIND_RETRY
                log.error("cannot open the TLS listener; retrying", reason=str(exc))

    def open_spool(self):
        """This worker's spool file and its committer thread. "memory"
        durability is the same spool written without fdatasync."""
        cfg = self.config
        try:
            return SpoolWriter(cfg.spool_directory, cfg.spool_max_bytes,
                               durable=cfg.durability == "spool",
                               board_address=self.slot.field_address("spool") if self.slot else 0,
                               interval_ms=cfg.commit_interval_ms)
        except OSError as exc:
            raise BootError(f"cannot write the spool in SpoolDirectory "
                            f"{cfg.spool_directory}: {exc.strerror}") from None

    async def tick(self, registry, spool):
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK)
            registry.sweep(loop.time())
            spool.refresh_old_bytes()
            if self.cert is not None:
                await self.watch_certificate()
            self.stats.sync()
            if os.getppid() != self.parent:
                log.warning("supervisor gone; draining")
                self.stop.set()

    async def drain(self, app, registry, spool):
        started = time.monotonic()
        timeout = self.config.drain_timeout
        app.draining = registry.draining = True
        for server in self.servers:
            server.close()
        for conn in list(registry.open):
            conn.drain()
        loop = asyncio.get_running_loop()
        while registry.open and time.monotonic() - started < timeout * 0.5:
            await asyncio.sleep(0.05)
            registry.sweep(loop.time())   # the ticker is stopped: idle ones close here
        for conn in list(registry.open):
            conn.close()
        try:
            await asyncio.wait_for(spool.flush(),
                                   max(0.5, timeout - (time.monotonic() - started)))
        except asyncio.TimeoutError:
            log.error("the last spool group did not settle in time", path=spool.path)
        spool.close()
        self.stats.sync()
        log.info("worker drained", seconds=round(time.monotonic() - started, 3))


def run(config, index, ready_fd, shared=None, conn_slot=0, board=None, slot=None):
    """Entry point in the forked child; returns the process exit code.

    ``shared`` is the supervisor's SharedLimits (node-wide rate limits and
    connection counts); ``conn_slot`` this worker's slot in it; ``board`` and
    ``slot`` the worker board (engine/board.py) and this worker's slot.
    """
    if shared is None:   # run on its own: limits cover this process only
        from engine.limits._bucket import SharedLimits
        shared = SharedLimits.create(1024)
    worker = HttpWorker(config, index, ready_fd, shared, conn_slot, board, slot)
    return run_async(config, f"http-{index}", worker.serve, slot, "http", index)
