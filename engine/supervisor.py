"""The pre-fork supervisor: forks the workers and keeps their number right.

``run()`` tells the whole story: prepare, spawn, then loop — wait for a
signal or a child event, dispatch ``handle_<signal>``, reap dead workers,
kill silent or overdue ones, respawn what is missing. Signal handlers only
enqueue the signal.

Children, by kind (``Worker.kind``), each titled ``tracker: <kind>-<index>``:
``store`` × StoreWorkers (workers/store.py: spool → sinks), ``http`` ×
Workers (workers/http.py: parse → spool → answer), and one ``consume``
(NATS Consume entries) and one ``acme`` (TLS "acme") when configured.

Every child gets a slot of the worker board (engine/board.py) taken before
the fork and freed after it is reaped. A ready child that has not beaten its
slot for ``WorkerTimeoutSeconds`` (a stuck event loop would otherwise keep
its SO_REUSEPORT socket and keep being handed connections) gets SIGABRT,
then SIGKILL after ``KILL_GRACE``, and is replaced. The ACME process sleeps
between renewals in plain blocking calls and is not watched.

Workers bind their own SO_REUSEPORT socket after the fork. A worker that
cannot boot (exit code EXIT_BOOT, or dying before it reported ready) stops
the supervisor with a non-zero code instead of being respawned forever; a
worker that dies after it was serving is respawned with backoff.

The supervisor also keeps the CPU account per role (``SupervisorStats``,
engine/metrics.py): every ``USAGE_EVERY`` it reads each live child's CPU and
memory from /proc, and a reaped child's last CPU from ``os.wait4``, so
``tracker_process_cpu_seconds_total{role}`` includes the processes that died.

Stopping: HTTP workers (and the consumer, ACME) get SIGTERM first; the store
processes only once the last HTTP worker has exited, so they find every
spool file final and finish it.
"""
import os
import select
import shlex
import signal
import socket
import tempfile
import shutil
import time
import traceback

from engine import metrics
from engine.board import Board
from engine.ingest import privacy
from engine.tls import acmefiles

from engine.system import procstat, rlimits
from engine.system.cpus import usable_cpus
from engine.config import load_config
from engine.errors import ConfigError
from engine.logs import configure, log
from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.registry import SinkEntryError, build_sinks
from engine.limits._bucket import CONNECTION_SLOTS, SharedLimits
from workers import EXIT_BOOT, EXIT_CRASH, EXIT_OK
from workers.base import set_title

MIGRATE_SYSCTL = "/proc/sys/net/ipv4/tcp_migrate_req"
BOOT_TIMEOUT = 10.0
RESPAWN_BACKOFF_MAX = 10.0
KILL_GRACE = 5.0
HTTP, STORE, CONSUMER, ACME = "http", "store", "consume", "acme"   # kinds of child
UNWATCHED = (ACME,)          # kinds without a heartbeat (blocking sleeps)
SHARED_IP_SLOTS = 65536      # per-IP buckets in shared memory (2 MiB)
USAGE_EVERY = 0.5            # seconds between readings of the children's CPU and memory


class Worker:
    """The supervisor's view of one child."""

    def __init__(self, pid, kind, index, ready_fd, generation):
        self.pid = pid
        self.kind = kind
        self.index = index
        self.ready_fd = ready_fd
        self.generation = generation
        self.ready = False
        self.retiring = False
        self.probation = False
        self.started = time.monotonic()
        self.term_sent = 0.0
        self.abort_sent = 0.0    # SIGABRT for a silent heartbeat
        self.conn_slot = None    # its slot of the shared connection counters (HTTP)
        self.board_slot = None   # its slot of the worker board


class Supervisor:
    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)

    def __init__(self, config, config_path, overrides):
        self.config = config
        self.config_path = config_path
        self.overrides = overrides
        self.workers = {}            # pid -> Worker
        self.signals = []
        self.generation = 0
        self.stopping = False
        self.exit_code = EXIT_OK
        self.respawn_at = {}         # (kind, index) -> monotonic time
        self.backoff = {}            # (kind, index) -> seconds
        self.metrics_dir = None
        self.stats = None            # SupervisorStats: CPU per role, restarts, node facts
        self.usage_at = 0.0          # monotonic time of the last CPU/memory reading
        self.shared = None           # SharedLimits, created before the first fork
        self.board = None            # the worker board, created before the first fork

    # ---- the story -------------------------------------------------------
    def run(self):
        self.prepare()
        try:
            self.spawn_missing()
            self.wait_until_booted()
            while not (self.stopping and not self.workers):
                self.wait_for_event(0.5)
                self.dispatch_signals()
                self.reap_workers()
                self.kill_overdue()
                self.kill_silent()
                if self.stopping:
                    self.stop_stores_after_ingest()
                else:
                    self.spawn_missing()
        finally:
            self.cleanup()
        log.info("supervisor exiting", code=self.exit_code)
        return self.exit_code

    # ---- preparation -----------------------------------------------------
    def raise_open_files_limit(self):
        before, after = rlimits.raise_open_files_limit()
        if after != before:
            log.info("raised the open-files limit", soft_before=before, soft=after)
        problem = rlimits.too_low(after, self.config.maximum_connections)
        if problem:
            log.warning("open-files limit", detail=problem)

    def prepare(self):
        configure(self.config.effective_log_level, "supervisor")
        # The arguments stay in the title: `ps` shows them, and the container's
        # health probe (docker/healthcheck.py) reads --listen / --config there.
        set_title("supervisor " + shlex.join(os.sys.argv[1:]))
        log_config_notes(self.config)
        self.raise_open_files_limit()
        self.shared = SharedLimits.create(SHARED_IP_SLOTS)
        self.board = Board()
        privacy.node_secret()        # drawn once here: every worker hashes addresses alike
        self.metrics_dir = tempfile.mkdtemp(prefix="tracker-metrics-")
        metrics.prepare_dir(self.metrics_dir)
        self.stats = metrics.SupervisorStats()
        self.stats.bind()
        self.stats.usage.started(os.getpid(), "supervisor")
        self.publish_node_facts()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        for sig in self.SIGNALS:
            signal.signal(sig, self.enqueue_signal)
        for address in self.listen_addresses(self.config):
            self.check_port_free(address)
        if self.config.admin_address:
            self.check_port_free(self.config.admin_address)
        else:
            log.warning("AdminListen is not set: /metrics and /status are answered on the "
                        "public port to anyone who asks; set AdminListen (e.g. "
                        "\"127.0.0.1:9100\") to serve them on an internal address only")
        self.prepare_stores()
        self.prepare_acme_cache()
        if self.config.reuseport_migrate:
            enable_reuseport_migration()
        log.info("supervisor starting", workers=self.config.workers,
                 store_workers=self.config.store_workers, tls=self.config.tls,
                 listen=["%s:%d" % a for a in self.listen_addresses(self.config)])

    def prepare_stores(self):
        try:
            sinks = build_sinks(self.config)
        except SinkEntryError as exc:
            raise BootFailure(str(exc)) from None
        for sink in sinks:
            try:
                sink.prepare()
            except SinkUnavailable as exc:
                if sink.critical:
                    raise BootFailure(f"critical sink {sink.service} unavailable: {exc}") from None
                log.error("sink unavailable; starting anyway", sink=sink.service, error=str(exc))

    def prepare_acme_cache(self):
        """Before any fork: workers answer challenges from it at once."""
        if self.config.tls != "acme":
            return
        try:
            acmefiles.prepare_cache(self.config.acme_cache_directory)
        except OSError as exc:
            raise BootFailure(f"AcmeCacheDirectory {self.config.acme_cache_directory}: "
                              f"{exc.strerror}") from None

    @staticmethod
    def listen_addresses(config):
        """Plain port, plus the TLS port when TLS is on (the plain one then
        redirects and answers ACME challenges)."""
        if config.tls == "off":
            return [config.listen]
        return [config.listen, config.listen_tls]

    @staticmethod
    def check_port_free(address):
        """Fail fast, with the reason, when something already listens there.

        Bound without SO_REUSEPORT on purpose: with it, a second collector
        on the same port would silently share the traffic.
        """
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise BootFailure(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        finally:
            probe.close()

    def publish_node_facts(self):
        """The figures the cost rules divide by (at start and on reload)."""
        self.stats.configured(usable_cpus(), self.config.server_monthly_cost)

    def publish_usage(self):
        """CPU and memory per role into the metrics, every USAGE_EVERY."""
        now = time.monotonic()
        if now - self.usage_at >= USAGE_EVERY:
            self.usage_at = now
            self.stats.sync()

    def enqueue_signal(self, signum, frame):
        self.signals.append(signum)

    def cleanup(self):
        signal.set_wakeup_fd(-1)
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    # ---- events ----------------------------------------------------------
    def wait_for_event(self, timeout):
        self.publish_usage()    # every loop of the supervisor (run, boot, reload) waits here
        waiting = {w.ready_fd: w for w in self.workers.values() if w.ready_fd is not None}
        try:
            readable, _, _ = select.select([self.wake_r, *waiting], [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            if fd == self.wake_r:
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            else:
                self.mark_ready(waiting[fd])

    def mark_ready(self, worker):
        data = os.read(worker.ready_fd, 1)
        os.close(worker.ready_fd)
        worker.ready_fd = None
        worker.ready = data == b"R"
        if worker.ready:
            log.debug("worker ready", worker=worker.pid, index=worker.index)

    def dispatch_signals(self):
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.handle_term(signum)
            elif signum == signal.SIGHUP:
                self.handle_hup()

    def handle_term(self, signum):
        if not self.stopping:
            log.info("draining", signal=signal.Signals(signum).name)
            self.begin_stop(EXIT_OK)

    def begin_stop(self, code):
        self.stopping = True
        if code:
            self.exit_code = code
        for worker in self.workers.values():
            if worker.kind != STORE:
                self.terminate(worker)
        self.stop_stores_after_ingest()

    def stop_stores_after_ingest(self):
        """Store processes stop once no HTTP worker can add to the spool."""
        if any(w.kind == HTTP for w in self.workers.values()):
            return
        for worker in self.workers.values():
            if worker.kind == STORE:
                self.terminate(worker)

    def terminate(self, worker):
        if not worker.term_sent:
            worker.term_sent = time.monotonic()
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # ---- children --------------------------------------------------------
    def wanted(self):
        """kind -> how many of it this config wants (stores first: they boot
        alongside the HTTP workers and must be there to read the spool)."""
        return {STORE: self.config.store_workers, HTTP: self.config.workers,
                CONSUMER: 1 if self.wants_consumer() else 0,
                ACME: 1 if self.config.tls == "acme" else 0}

    def wants_consumer(self):
        return any(isinstance(e, dict) and e.get("Service") == "nats"
                   for e in self.config.consume)

    def spawn_missing(self):
        now = time.monotonic()
        for kind, count in self.wanted().items():
            active = {w.index for w in self.workers.values()
                      if w.kind == kind and not w.retiring}
            for index in range(count):
                if index not in active and now >= self.respawn_at.get((kind, index), 0):
                    self.spawn(kind, index)

    def spawn(self, kind, index, probation=False):
        """Fork one child of ``kind``; it runs that kind's ``*_main``."""
        main = {HTTP: self.http_main, STORE: self.store_main,
                CONSUMER: self.consume_main, ACME: self.acme_main}[kind]
        slot = self.board.take()
        conn_slot = self.take_conn_slot() if kind == HTTP else None
        try:
            worker = self.fork_child(kind, index, lambda ready_w: main(
                index, ready_w, self.board.slot(slot), conn_slot))
        except BaseException:
            self.board.release(slot)
            raise
        worker.probation = probation
        worker.board_slot, worker.conn_slot = slot, conn_slot
        return worker

    def fork_child(self, kind, index, main):
        """Fork a child that runs ``main(ready_fd)`` and exits with its code."""
        ready_r, ready_w = os.pipe()
        for stream in (os.sys.stdout, os.sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # child
            os.close(ready_r)
            os._exit(self.run_child(main, ready_w))
        os.close(ready_w)
        self.stats.usage.started(pid, kind)
        worker = Worker(pid, kind, index, ready_r, self.generation)
        self.workers[pid] = worker
        return worker

    def run_child(self, main, ready_w):
        code = EXIT_CRASH
        try:
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            os.close(self.wake_w)
            for sig in self.SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            code = main(ready_w)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                os.sys.stderr.flush()
            except Exception:
                pass
        return code

    def http_main(self, index, ready_w, slot, conn_slot):
        from workers import http as http_worker
        return http_worker.run(self.config, index, ready_w, shared=self.shared,
                               conn_slot=conn_slot, board=self.board, slot=slot)

    def store_main(self, index, ready_w, slot, _conn_slot):
        from workers import store
        return store.run(self.config, index, self.config.store_workers, ready_w,
                         board=self.board, slot=slot)

    def consume_main(self, index, ready_w, slot, _conn_slot):
        from workers import consume
        return consume.run(self.config, index, ready_w, slot=slot)

    def acme_main(self, index, ready_w, slot, _conn_slot):
        from workers import acme
        return acme.run(self.config, index, ready_w)

    def take_conn_slot(self):
        """A free slot of the shared connection counters for a new worker."""
        used = {w.conn_slot for w in self.workers.values()}
        for slot in range(CONNECTION_SLOTS):
            if slot not in used:
                return slot
        raise BootFailure("no free connection-counter slot (too many workers)")

    def release_slots(self, worker):
        """A dead worker's open connections no longer count node-wide, and
        its board slot is free."""
        if worker.conn_slot is not None:
            self.shared.conn_reset(worker.conn_slot)
            worker.conn_slot = None
        if worker.board_slot is not None:
            self.board.release(worker.board_slot)
            worker.board_slot = None

    def roll_singles(self):
        """Reload: start each single process with the new config, then retire
        the old one (a fresh one that cannot start leaves the old running)."""
        wanted = self.wanted()
        for kind in (CONSUMER, ACME):
            old = [w for w in self.workers.values() if w.kind == kind and not w.retiring]
            if wanted[kind]:
                fresh = self.spawn(kind, 0, probation=True)
                if not self.wait_ready(fresh):
                    self.terminate(fresh)
                    fresh.retiring = True
                    log.error("new process could not start; the previous one keeps running",
                              kind=kind)
                    continue
                fresh.probation = False
            for worker in old:
                worker.retiring = True
                self.terminate(worker)

    def roll_stores(self):
        """Reload: stop the store processes, then start them with the new
        config. Never both at once: two processes writing one sink's share of
        the spool would write it twice."""
        old = [w for w in self.workers.values() if w.kind == STORE and not w.retiring]
        for worker in old:
            worker.retiring = True
            self.terminate(worker)
        deadline = time.monotonic() + self.config.drain_timeout + KILL_GRACE + 1
        while any(w.pid in self.workers for w in old) and time.monotonic() < deadline:
            self.wait_for_event(0.1)
            self.reap_workers()
            self.kill_overdue()
        for index in range(self.config.store_workers):
            fresh = self.spawn(STORE, index, probation=True)
            if self.wait_ready(fresh):
                fresh.probation = False
            else:
                log.error("new store process could not start; retrying", index=index)

    def wait_until_booted(self):
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not all(w.ready for w in self.workers.values()):
            if self.stopping:
                return
            if time.monotonic() > deadline:
                log.error("workers did not become ready in time", seconds=BOOT_TIMEOUT)
                self.begin_stop(EXIT_BOOT)
                return
            self.wait_for_event(0.2)
            self.dispatch_signals()
            self.reap_workers()
        log.info("serving", workers=len(self.workers),
                 pids=sorted(w.pid for w in self.workers.values()))

    def reap_workers(self):
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.stats.usage.reaped(pid, procstat.rusage_cpu_seconds(rusage))
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self.worker_exited(worker, os.waitstatus_to_exitcode(status))

    def worker_exited(self, worker, code):
        metrics.mark_dead(worker.pid)
        self.release_slots(worker)
        if worker.ready_fd is not None:
            os.close(worker.ready_fd)
            worker.ready_fd = None
        if worker.retiring or self.stopping:
            log.info("worker exited", worker=worker.pid, code=code)
            if self.stopping and code not in (EXIT_OK, -signal.SIGTERM):
                self.exit_code = self.exit_code or EXIT_CRASH
        elif code == EXIT_BOOT or not worker.ready:
            if worker.probation:
                log.error("new worker could not boot", worker=worker.pid, code=code)
                if worker.kind == STORE:       # no previous one to fall back on
                    self.schedule_respawn(worker, code)
                return
            log.error("worker could not boot; stopping", worker=worker.pid, code=code)
            self.begin_stop(EXIT_BOOT)
        else:
            self.schedule_respawn(worker, code)

    def schedule_respawn(self, worker, code):
        self.stats.restarted()
        key = (worker.kind, worker.index)
        lived = time.monotonic() - worker.started
        previous = self.backoff.get(key, 0.0)
        delay = 0.0 if lived > 30 else min(max(0.1, previous * 2), RESPAWN_BACKOFF_MAX)
        self.backoff[key] = delay
        self.respawn_at[key] = time.monotonic() + delay
        log.warning("worker died; respawning", worker=worker.pid, code=code, kind=worker.kind,
                    index=worker.index, delay=delay)

    def kill_overdue(self):
        limit = self.config.drain_timeout + KILL_GRACE
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.term_sent and now - worker.term_sent > limit:
                log.error("worker did not drain in time; killing", worker=worker.pid)
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                worker.term_sent = now  # do not repeat every loop

    def kill_silent(self):
        """SIGABRT a ready worker whose heartbeat is older than
        WorkerTimeoutSeconds; SIGKILL it KILL_GRACE later if still there."""
        now = time.monotonic_ns()
        limit = int(self.config.worker_timeout * 1e9)
        for worker in self.workers.values():
            if not worker.ready or worker.term_sent or worker.kind in UNWATCHED:
                continue
            if worker.abort_sent:
                if now - worker.abort_sent > KILL_GRACE * 1e9:
                    self.signal_worker(worker, signal.SIGKILL)
                    worker.abort_sent = now
                continue
            silent = now - self.board.heartbeat(worker.board_slot)
            if silent > limit:
                log.error("worker silent; replacing it", worker=worker.pid, kind=worker.kind,
                          index=worker.index, silent_seconds=round(silent / 1e9, 1))
                self.signal_worker(worker, signal.SIGABRT)
                worker.abort_sent = now

    @staticmethod
    def signal_worker(worker, signum):
        try:
            os.kill(worker.pid, signum)
        except ProcessLookupError:
            pass

    # ---- reload ----------------------------------------------------------
    def handle_hup(self):
        if self.stopping:
            return
        try:
            new = load_config(self.config_path, self.overrides)
            for address in self.listen_addresses(new):
                if address not in self.listen_addresses(self.config):
                    self.check_port_free(address)
        except (ConfigError, BootFailure) as exc:
            log.error("reload refused; the running config stays", reason=str(exc))
            return
        old_config, self.config = self.config, new
        configure(new.effective_log_level, "supervisor")
        log_config_notes(new)
        self.generation += 1
        log.info("reloading: replacing workers one at a time", generation=self.generation)
        if not self.roll_workers():
            self.config = old_config
            log.error("reload aborted; remaining workers keep the previous config")
            return
        self.roll_singles()
        self.roll_stores()
        self.publish_node_facts()
        log.info("reload done", pids=sorted(w.pid for w in self.workers.values()
                                             if not w.retiring))

    def roll_workers(self):
        """Start a new worker, wait until it serves, then retire an old one."""
        old = sorted((w for w in self.workers.values()
                      if not w.retiring and w.kind == HTTP), key=lambda w: w.index)
        by_index = {w.index: w for w in old}
        for index in range(max(self.config.workers, len(old))):
            if index < self.config.workers:
                fresh = self.spawn(HTTP, index, probation=True)
                if not self.wait_ready(fresh):
                    self.terminate(fresh)
                    fresh.retiring = True
                    return False
                fresh.probation = False
            previous = by_index.get(index)
            if previous is not None:
                previous.retiring = True
                self.terminate(previous)
        return True

    def wait_ready(self, worker):
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not worker.ready and time.monotonic() < deadline:
            if worker.pid not in self.workers:
                return False
            self.wait_for_event(0.1)
            self.reap_workers()
        return worker.ready


class BootFailure(RuntimeError):
    """The collector cannot start (port taken, ...)."""


def log_config_notes(config):
    """What loading the config let pass: warnings, skipped entries (an error:
    a store or consumer the operator asked for is not there), ignored keys."""
    for warning in config.warnings:
        log.warning("config", detail=warning)
    for skipped in config.skipped:
        log.error("config entry skipped", detail=skipped)
    if config.ignored:
        log.info("config keys of the Go collector not used here", keys=config.ignored)


def enable_reuseport_migration():
    """Let Linux move queued connections of a closing listener to its peers.

    Without ``net.ipv4.tcp_migrate_req`` a retiring worker's accept queue is
    reset when it closes its SO_REUSEPORT socket, so a reload under load
    would refuse a few connections.
    """
    try:
        with open(MIGRATE_SYSCTL) as fh:
            if fh.read().strip() == "1":
                return
        with open(MIGRATE_SYSCTL, "w") as fh:
            fh.write("1")
        log.info("enabled net.ipv4.tcp_migrate_req for loss-free reloads")
    except OSError as exc:
        log.warning("cannot enable net.ipv4.tcp_migrate_req; a reload under load may "
                    "reset connections queued on retiring workers", error=str(exc))


def serve(config_path, overrides):
    """``tracker serve``: validate, then supervise until told to stop."""
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        configure("info", "supervisor")
        log.error("invalid config", reason=str(exc))
        return 2
    try:
        return Supervisor(config, config_path, overrides).run()
    except BootFailure as exc:
        log.error("cannot start", reason=str(exc))
        return EXIT_BOOT
