"""Embedded store benchmark (issue 25): SQLite's lean layout against DuckDB, in one run.

    python loadtest/bench_store.py [--events 300000] [--mix realistic|visitors] [--report-events 1000000]
        [--live-seconds 20] [--backlog 300000] [--candidates wave1,sqlite,sqlite-pure,duckdb] [--smoke]
        [--sections drain,serve,gc,live,reports] [--drain-rounds 1] [--gc-rounds 3] [--json FILE]
    python loadtest/bench_store.py --soak 600 --rate R     # rate-controlled soak (oha)

Traffic is loadtest/store_corpus.py's: ``realistic`` (issue 25's mix: every
request a new visitor with its own uid, 500 pages, 50 referral codes,
lat/lon, score, 40 user agents; ``--mix visitors``: loadtest/visitors.lua's, 40 %
new visitors, the others returning) and ``reports`` (visits with funnel steps,
experiments, conversions, campaigns and referral loops), as spool files made
by the compiled encoder, so a store reads them as it reads a worker's spool.

1. drain: each candidate in its own process pinned to one core, through the
   real storage stage (engine/store/stage.py: tail, CRC, decode, batch, the
   sink's writer thread): events/s, CPU per event (the process, all threads),
   store bytes per event (after a checkpoint). ``wave1`` is the before
   figure: the wave-1 sink and schema as git has them at WAVE1_REV, fed the
   same spool by the same stage (skipped when the checkout has no history);
   ``sqlite-pure`` is the lean layout written by the sink's pure-Python
   writer (``TRACKER_PURE_SQLITE=1``) instead of the compiled one;
2. store process (SQLite): `tracker serve` pinned to one core draining the
   same spool: events/s and the store process's CPU per event;
   ``gc``: the same drain with the store process's memory settings
   (engine/system/gc_tuning.py: the garbage collector tuned, freed arenas
   kept), with CPython's GC defaults (``TRACKER_GC=python``) and with the
   interpreter's own arena allocator (``TRACKER_ARENAS=python``),
   ``--gc-rounds`` interleaved rounds of each;
3. live (SQLite): `tracker serve`, its store process alone on core 1 with a
   spooled backlog of realistic events, while wrk (loadtest/visitors.lua,
   a new visitor with its own uid every request) loads its HTTP worker on
   core 0: events/s the store process sustains with the collector ingesting
   at the same time, CPU per event; then the drain, and a count check;
4. reports: each candidate filled with ``--report-events`` of the reports mix
   (its drain rate is reported too), then every report kind timed while a
   writer appends to the store at the same time (SQLite: another process, as
   `tracker report` reads beside the store process; DuckDB: a thread of the
   same process, since no other process may open its file).

``--soak`` runs `tracker serve` (1 HTTP worker, 1 store process) under
``oha -q RATE`` for the given seconds and samples RSS, spool bytes and lag
every 10 s; it prints oha's p50/p99 and status codes.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
# The repository root last: `loadtest` comes from it, `engine` from the
# installed package first (a non-editable install has the compiled modules,
# the source tree does not).
sys.path.append(os.path.dirname(HERE))

from loadtest import store_corpus  # noqa: E402
from loadtest.bench_http import (children, cpu_seconds, free_port, parse_wrk,  # noqa: E402
                                 tracker_command)

ROOT = os.path.dirname(HERE)
# The last commit whose SQLite sink and schema are wave 1's (a table per
# DESIGN §3 row table, copying the event's columns): the "before" candidate.
WAVE1_REV = "9fe716d3c4b77b7747dfc45193cb16732aa488a2"
CORES = os.cpu_count() or 1
STORE_CORE = 1 if CORES > 1 else 0
LOAD_CORE = 0
FUNNEL = ("view", "cart", "checkout", "buy")


# ---------------------------------------------------------------- helpers

def rusage_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def link_copy(src, dst):
    """A copy of a spool directory made of hard links (the stage deletes files)."""
    os.makedirs(dst)
    for name in os.listdir(src):
        os.link(os.path.join(src, name), os.path.join(dst, name))


def in_child(fn, *args):
    """Run ``fn(*args)`` in a forked process and return its result."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def target():
        try:
            queue.put(("ok", fn(*args)))
        except BaseException as exc:   # report it to the parent
            queue.put(("error", repr(exc)))

    proc = ctx.Process(target=target)
    proc.start()
    status, value = queue.get()
    proc.join()
    if status != "ok":
        raise SystemExit(f"{fn.__name__} failed: {value}")
    return value


def title(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[0].decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            return int(re.search(r"^VmRSS:\s+(\d+)", fh.read(), re.M).group(1))
    except (FileNotFoundError, AttributeError):
        return 0


def runqueue_wait(pid):
    """Seconds the threads of ``pid`` spent ready to run but waiting for a
    core (/proc schedstat): on a shared machine, what other load took."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[1])
        except (FileNotFoundError, IndexError):
            pass
    return total / 1e9


def dir_bytes(path):
    total = 0
    for name in os.listdir(path):
        try:
            total += os.path.getsize(os.path.join(path, name))
        except FileNotFoundError:
            pass
    return total


# ---------------------------------------------------------------- candidates

class DuckDBSink:
    """loadtest/duckdb_store.py behind the sink interface the stage drives."""
    service = "duckdb"
    multi_writer = False

    def __init__(self, path):
        self.path = path
        self.store = None
        self.executor = None

    async def start(self):
        from engine.system.threads import named_executor
        from loadtest.duckdb_store import DuckDBStore
        self.executor = named_executor("duckdb")
        self.store = DuckDBStore(self.path)

    async def write_batch(self, batch):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.store.write_batch, batch)

    async def close(self):
        self.store.close()
        self.executor.shutdown(wait=True)

    def size(self):
        return self.store.size()


def wave1_sources(rev):
    """(sink code, schema) of the wave-1 SQLite layout as git has them at
    ``rev``; None when this checkout has no such history."""
    def show(path):
        return subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{path}"], capture_output=True,
                              text=True, check=True).stdout
    try:
        return show("engine/store/sinks/sqlite.py"), show("schema/sqlite.sql")
    except (OSError, subprocess.CalledProcessError):
        return None


def wave1_sink_class(sources):
    """The wave-1 SQLiteSink, built from its source; it consumes the same
    fan_out Batch (rows and counters) as today's sink."""
    code, schema = sources
    module = types.ModuleType("wave1_sqlite")
    exec(compile(code, f"{WAVE1_REV[:7]}:engine/store/sinks/sqlite.py", "exec"),
         module.__dict__)
    module.schema_text = lambda name: schema   # its schema, not today's
    return module.SQLiteSink


def make_sink(candidate, path, wave1=None):
    if candidate == "duckdb":
        return DuckDBSink(path)
    if candidate == "wave1":
        SQLiteSink = wave1_sink_class(wave1)
    elif candidate == "sqlite-pure":     # the lean layout by the pure-Python writer
        os.environ["TRACKER_PURE_SQLITE"] = "1"      # (a forked child: its own env)
        from engine.store.sinks.sqlite import SQLiteSink
    else:
        from engine.store.sinks.sqlite import SQLiteSink
    sink = SQLiteSink({"Service": "sqlite", "Path": path}, types.SimpleNamespace(schema_version=1))
    sink.size = lambda: sqlite_size(path)
    return sink


def sqlite_size(path):
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


# ---------------------------------------------------------------- 1. drain in process

def drain_in_process(candidate, spool_dir, db_path, total, batch_events, wave1=None):
    """The storage stage with one sink over ``spool_dir``, pinned to one core."""
    from engine.logs import log
    log.set_level("warning")
    os.sched_setaffinity(0, {STORE_CORE})
    return asyncio.run(_drain(candidate, spool_dir, db_path, total, batch_events, wave1))


async def _drain(candidate, spool_dir, db_path, total, batch_events, wave1):
    from engine.metrics import StoreStats
    from engine.spool import legacy_sink_id, sink_id
    from engine.store.stage import SinkStage
    sink = make_sink(candidate, db_path, wave1)
    config = types.SimpleNamespace(spool_directory=spool_dir, batch_max_events=batch_events,
                                   batch_max_age_ms=250, bots="keep")
    stats = StoreStats()
    sids = [(sink_id(0, sink.service), legacy_sink_id(0, sink.service))]
    await sink.start()
    stage = SinkStage(sink, 0, config, stats, lambda pid: True, sids)
    cpu0, t0, wait0 = rusage_cpu(), time.monotonic(), runqueue_wait(os.getpid())
    stage.start()
    while stats.sink_written.get(sink.service, 0) < total:
        await asyncio.sleep(0.02)
        if time.monotonic() - t0 > 3600:
            raise RuntimeError("drain did not finish within an hour")
    elapsed, cpu = time.monotonic() - t0, rusage_cpu() - cpu0
    waited = runqueue_wait(os.getpid()) - wait0
    await stage.drain(time.monotonic() + 30)
    await sink.close()
    size = sink.size()
    return {"events": total, "seconds": elapsed, "events_per_s": total / elapsed,
            "cpu_us_per_event": cpu * 1e6 / total, "bytes_per_event": size / total,
            "bytes": size, "core_waited": waited / elapsed}


# ---------------------------------------------------------------- 2/3. tracker serve

class Collector:
    """`tracker serve` on SQLite with one HTTP worker and one store process."""

    def __init__(self, directory, spool_dir, port=None, env=None):
        self.dir = directory
        self.db = os.path.join(directory, "store.db")
        self.spool = spool_dir
        self.port = port or free_port()
        os.makedirs(directory, exist_ok=True)
        config = os.path.join(directory, "config.json")
        with open(config, "w") as fh:
            json.dump({"TLS": "off", "LogLevel": "warning", "MaximumConnections": 0,
                       "SpoolDirectory": spool_dir, "Durability": "spool",
                       "Notify": [{"Service": "sqlite", "Path": self.db, "Critical": True}]}, fh)
        self.proc = subprocess.Popen(
            tracker_command() + ["serve", "--config", config, "--workers", "1",
                                 "--listen", f"127.0.0.1:{self.port}"],
            stderr=open(os.path.join(directory, "log"), "wb"),
            env=None if env is None else {**os.environ, **env})
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1):
                    if self.store_pid() and self.http_pid():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("collector did not start (see %s/log)" % self.dir)

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def store_pid(self):
        return next((p for p in children(self.proc.pid)
                     if title(p).startswith("tracker: store-")), None)

    def http_pid(self):
        return next((p for p in children(self.proc.pid)
                     if title(p).startswith("tracker: http-")), None)

    def pin(self, store_core, other_core):
        for pid in self.pids():
            core = store_core if pid == self.store_pid() else other_core
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    os.sched_setaffinity(int(tid), {core})
                except ProcessLookupError:
                    pass

    def events(self):
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
                return conn.execute("SELECT count(*) FROM ev").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    def live_markers(self):
        """(events stored, distinct markers among the wrk-made ones)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM ev), count(DISTINCT json_extract(params, '$.m')) "
                "FROM ev WHERE params LIKE '{\"m\":\"L.%'").fetchone()

    def wait_events(self, n, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.events() >= n:
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)


def store_process_drain(spool_src, base, total, name="serve", env=None):
    """`tracker serve`, every process on the store core, draining ``total``
    spooled events: the store process's rate and CPU per event."""
    spool = os.path.join(base, f"spool-{name}")
    link_copy(spool_src, spool)
    c = Collector(os.path.join(base, name), spool, env=env)
    try:
        c.pin(STORE_CORE, STORE_CORE)
        store = c.store_pid()
        t0, n0, cpu0 = time.monotonic(), c.events(), cpu_seconds([store])
        wait0 = runqueue_wait(store)
        if not c.wait_events(total, 3600):
            raise SystemExit("the store process did not drain the spool")
        elapsed, cpu = time.monotonic() - t0, cpu_seconds([store]) - cpu0
        waited = runqueue_wait(store) - wait0
        n = total - n0
    finally:
        c.stop()
    return {"events": n, "events_per_s": n / elapsed, "store_cpu_us_per_event": cpu * 1e6 / n,
            "core_waited": waited / elapsed}


def live(spool_src, base, seconds, connections):
    """The store process on its own core, a spooled backlog, and wrk's
    realistic load on the HTTP worker at the same time."""
    spool = os.path.join(base, "spool-live")
    link_copy(spool_src, spool)
    backlog = len(os.listdir(spool)) and count_spooled(spool)
    c = Collector(os.path.join(base, "live"), spool)
    try:
        c.pin(STORE_CORE, LOAD_CORE)
        store, http = c.store_pid(), c.http_pid()
        t0, n0 = time.monotonic(), c.events()
        cpu0, http0 = cpu_seconds([store]), cpu_seconds([http])
        wait0 = runqueue_wait(store)
        wrk = run_visitors(c.port, seconds, connections)
        elapsed = time.monotonic() - t0
        n1, cpu1, http1 = c.events(), cpu_seconds([store]), cpu_seconds([http])
        waited = runqueue_wait(store) - wait0
        accepted = wrk["requests"] - wrk["non2xx"]
        caught_up = c.wait_events(backlog + accepted, 1800)
        time.sleep(1)        # requests wrk left in flight at its stop land too
        stored, markers = c.live_markers()
    finally:
        c.stop()
    n = n1 - n0
    return {"seconds": elapsed, "stored_events_per_s": n / elapsed,
            "store_cpu_us_per_event": (cpu1 - cpu0) * 1e6 / max(1, n),
            "store_core_busy": (cpu1 - cpu0) / elapsed, "core_waited": waited / elapsed,
            "ingest_req_per_s": wrk["rps"], "http_cpu_us_per_req":
                (http1 - http0) * 1e6 / max(1, wrk["requests"]),
            "non2xx": wrk["non2xx"], "p99_ms": wrk["p99_ms"], "backlog": backlog,
            "accepted": accepted, "stored_total": stored,
            # every 2xx stored, each once (wrk does not count the requests in
            # flight when it stops: up to one per connection more are stored)
            "exact": (caught_up and markers == stored - backlog
                      and 0 <= stored - backlog - accepted <= connections)}


def count_spooled(spool):
    from engine.spool import FileCursor
    total = 0
    for name in os.listdir(spool):
        cursor = FileCursor(os.path.join(spool, name))
        total += sum(1 for _ in cursor.read(cursor.size(), 1 << 62))
        cursor.close()
    return total


def run_visitors(port, seconds, connections):
    cmd = (["taskset", "-c", str(LOAD_CORE)] if CORES > 1 else []) + [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "-s", os.path.join(HERE, "visitors.lua"), f"http://127.0.0.1:{port}",
        "--", "tracker", "100", "L", "own"]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


# ---------------------------------------------------------------- 4. reports

def time_reports(candidate, db_path, start, end):
    """Each report kind's seconds, while a writer appends to the store."""
    os.sched_setaffinity(0, {STORE_CORE})
    stop = threading.Event()
    if candidate == "duckdb":
        return _duckdb_reports(db_path, start, end, stop)
    writer = multiprocessing.get_context("fork").Process(
        target=_sqlite_writer, args=(db_path, end))
    writer.start()
    try:
        from engine.store import queries
        from engine.store.sinks.sqlite import open_db
        conn = open_db(db_path, readonly=True)
        times = {}
        for kind, fn in queries.KINDS.items():
            args = (FUNNEL,) if kind == "funnels" else ()
            t0 = time.monotonic()
            rows = fn(conn, start, end, *args)
            times[kind] = (time.monotonic() - t0, len(rows))
        conn.close()
        from engine.store import stats
        t0 = time.monotonic()
        tables = stats.collect(db_path)["tables"]
        times["tracker stats"] = (time.monotonic() - t0, len(tables))
    finally:
        writer.terminate()
        writer.join()
    return times


def _sqlite_writer(db_path, after_ms):
    """Another process appending realistic batches (~10k events/s offered)."""
    import random
    from engine import _parse
    from engine.store.sinks.sqlite import SQLiteSink
    sink = SQLiteSink({"Service": "sqlite", "Path": db_path},
                      types.SimpleNamespace(schema_version=1))
    sink.start_sync()
    rnd, ids, n = random.Random(7), _parse.TimeUUIDGen(), 0
    while True:
        records = list(store_corpus.realistic(1000, rnd, ids, after_ms + n, 15000))
        sink.write_batch_sync([_parse.decode(r) for r in records])
        n += 1000
        time.sleep(0.1)


def _duckdb_reports(db_path, start, end, stop):
    import random
    from engine import _parse
    from loadtest.duckdb_store import REPORTS, DuckDBStore, funnel_sql
    store = DuckDBStore(db_path)

    def writer():
        rnd, ids, n = random.Random(7), _parse.TimeUUIDGen(), 0
        cursor = DuckDBStore.__new__(DuckDBStore)
        cursor.conn, cursor.batch_file = store.conn.cursor(), store.batch_file + ".w"
        while not stop.is_set():
            records = list(store_corpus.realistic(1000, rnd, ids, end + n, 15000))
            cursor.write_batch([_parse.decode(r) for r in records])
            n += 1000
            time.sleep(0.1)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    times = {}
    reader = store.conn.cursor()
    sql = dict(REPORTS, funnels=funnel_sql(FUNNEL))
    for kind in ("traffic", "pages", "referrers", "campaigns", "funnels", "experiments",
                 "loops"):
        t0 = time.monotonic()
        rows = reader.execute(sql[kind], (start, end)).fetchall()
        times[kind] = (time.monotonic() - t0, len(rows))
    stop.set()
    thread.join()
    store.close()
    return times


# ---------------------------------------------------------------- soak

def soak(args):
    base = tempfile.mkdtemp(prefix="tracker-soak-")
    spool = os.path.join(base, "spool")
    c = Collector(os.path.join(base, "soak"), spool)
    samples = []
    try:
        c.pin(STORE_CORE, LOAD_CORE)
        url = (f"http://127.0.0.1:{c.port}/tr/v1/ename/view/url/"
               "https%3A%2F%2Fshop.example%2Fp%2F1/ref/r1/lat/1.5/lon/2.5/score/3")
        oha = subprocess.Popen(
            (["taskset", "-c", str(LOAD_CORE)] if CORES > 1 else []) +
            [os.path.expanduser("~/.cargo/bin/oha"), "-q", str(args.rate), "-z",
             f"{args.soak}s", "-c", "64", "--latency-correction", "--no-tui",
             "--output-format", "json", url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while oha.poll() is None:
            time.sleep(10)
            samples.append(_sample(c, spool, time.monotonic() - t0))
            print("  t=%4.0fs store RSS %6.1f MB, http RSS %6.1f MB, spool %6.2f MB, "
                  "stored %d" % samples[-1], flush=True)
        result = json.loads(oha.stdout.read())
        accepted = sum(v for k, v in result["statusCodeDistribution"].items()
                       if k.startswith("2"))
        c.wait_events(accepted, 600)
        stored = c.events()
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
    pct = result["latencyPercentiles"]
    report = {"rate": args.rate, "seconds": args.soak, "status": result["statusCodeDistribution"],
              "p50_ms": pct["p50"] * 1000, "p99_ms": pct["p99"] * 1000,
              "accepted": accepted, "stored": stored, "samples": samples}
    print(f"soak: {args.rate} req/s for {args.soak} s: status {report['status']}, "
          f"p50 {report['p50_ms']:.2f} ms, p99 {report['p99_ms']:.2f} ms, "
          f"{accepted} accepted, {stored} stored")
    return report


def _sample(c, spool, t):
    return (t, rss_kib(c.store_pid() or 0) / 1024, rss_kib(c.http_pid() or 0) / 1024,
            dir_bytes(spool) / 1e6, c.events())


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000, help="events drained")
    ap.add_argument("--mix", choices=("realistic", "visitors"), default="realistic",
                    help="the drained events (drain, serve, gc): realistic (every event a new "
                         "visitor) or visitors (visitors.lua's, bench_ingest's: 40 %% new)")
    ap.add_argument("--report-events", type=int, default=1_000_000)
    ap.add_argument("--live-seconds", type=float, default=20)
    ap.add_argument("--backlog", type=int, default=300_000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--batch-events", type=int, default=1000, help="BatchMaxEvents")
    ap.add_argument("--candidates", default="wave1,sqlite,sqlite-pure,duckdb",
                    help="wave1: the wave-1 layout (before), drain section only")
    ap.add_argument("--sections", default="drain,serve,gc,live,reports")
    ap.add_argument("--drain-rounds", type=int, default=1,
                    help="interleaved drain rounds per candidate (median reported)")
    ap.add_argument("--gc-rounds", type=int, default=3,
                    help="gc section: interleaved rounds of each setting")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the tool works")
    ap.add_argument("--soak", type=float, default=0, help="seconds of rate-controlled load")
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    if args.soak:
        report = soak(args)
    else:
        if args.smoke:
            args.events, args.report_events, args.live_seconds, args.backlog = \
                5000, 20000, 2, 5000
        report = bench(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)


def bench(args):
    candidates = [c for c in args.candidates.split(",") if c]
    sections = set(args.sections.split(","))
    base = tempfile.mkdtemp(prefix="tracker-bench-store-")
    wave1 = None
    if "wave1" in candidates:
        wave1 = wave1_sources(WAVE1_REV)
        if wave1 is None:
            print(f"no git history with {WAVE1_REV[:7]}: the wave-1 (before) figure is skipped")
            candidates.remove("wave1")
    report = {"events": args.events, "mix": args.mix, "candidates": candidates}
    try:
        corpus = os.path.join(base, args.mix)
        store_corpus.write_spool(corpus, args.mix, args.events)
        print(f"{args.mix} mix: {args.events} events spooled; one core per measurement "
              f"(core {STORE_CORE}), load on core {LOAD_CORE}")
        report["drain"] = drain_section(args, base, corpus, candidates, wave1) \
            if "drain" in sections else {}
        if "sqlite" in candidates and "serve" in sections:
            r = report["store_process"] = store_process_drain(corpus, base, args.events)
            print(f"  tracker serve, store process draining: {r['events_per_s']:8,.0f} "
                  f"events/s, {r['store_cpu_us_per_event']:.1f} µs store CPU/event (waited for "
                  f"the core {r['core_waited']:.0%} of the time)")
        if "sqlite" in candidates and "gc" in sections:
            report["gc"] = gc_ab(corpus, base, args.events, args.gc_rounds)
        if "sqlite" in candidates and "live" in sections:
            backlog = os.path.join(base, "backlog")
            store_corpus.write_spool(backlog, "realistic", args.backlog, seed=26,
                                     now_ms=int(time.time() * 1000) - 3_600_000)
            r = report["live"] = live(backlog, base, args.live_seconds, args.connections)
            print(f"  live: store process {r['stored_events_per_s']:8,.0f} events/s sustained "
                  f"({r['store_cpu_us_per_event']:.1f} µs CPU/event, core "
                  f"{r['store_core_busy']:.0%} busy, waited {r['core_waited']:.0%}) while the HTTP worker took "
                  f"{r['ingest_req_per_s']:,.0f} req/s ({r['http_cpu_us_per_req']:.1f} µs "
                  f"CPU/req, {r['non2xx']} non-2xx, p99 {r['p99_ms']:.1f} ms); backlog "
                  f"{r['backlog']} + {r['accepted']} accepted = {r['stored_total']} stored: "
                  f"{'exact' if r['exact'] else 'MISMATCH'}")
        if "reports" in sections:
            report["reports"] = reports_section(
                args, base, [c for c in candidates if c not in ("wave1", "sqlite-pure")])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return report


# The store process's memory settings (engine/system/gc_tuning.py) and the
# environment that turns each off.
MEMORY_MODES = {"tuned": {},
                "python": {"TRACKER_GC": "python"},            # CPython's GC defaults
                "arenas": {"TRACKER_ARENAS": "python"}}        # the interpreter's arenas


def gc_ab(spool_src, base, total, rounds):
    """The store process's drain with its memory settings (the collector
    tuned for batches, freed arenas kept), with CPython's GC defaults
    (``TRACKER_GC=python``) and with the interpreter's own arena allocator
    (``TRACKER_ARENAS=python``), interleaved rounds: medians of each."""
    runs = {mode: [] for mode in MEMORY_MODES}
    for i in range(rounds):
        order = list(MEMORY_MODES)
        for mode in order[::-1] if i % 2 else order:
            env = {"TRACKER_GC": "tuned", **MEMORY_MODES[mode]}
            runs[mode].append(store_process_drain(spool_src, base, total, f"gc-{mode}-{i}", env))
    out = {}
    for mode, found in runs.items():
        out[mode] = {k: statistics.median(r[k] for r in found)
                     for k in ("events_per_s", "store_cpu_us_per_event")}
        print(f"  gc {mode:6s} (median of {rounds}): {out[mode]['events_per_s']:8,.0f} events/s, "
              f"{out[mode]['store_cpu_us_per_event']:.1f} µs store CPU/event")
    tuned = out["tuned"]["store_cpu_us_per_event"]
    print(f"  CPU per event, tuned / python GC defaults: "
          f"{tuned / out['python']['store_cpu_us_per_event']:.2f}; tuned / the interpreter's "
          f"arenas: {tuned / out['arenas']['store_cpu_us_per_event']:.2f}")
    return out


def drain_section(args, base, corpus, candidates, wave1):
    """Each candidate drains the spool of the chosen mix, ``--drain-rounds`` interleaved
    rounds; the round with the median CPU per event is reported."""
    runs = {cand: [] for cand in candidates}
    for i in range(args.drain_rounds):
        for cand in candidates:
            spool = os.path.join(base, f"spool-{cand}-{i}")
            link_copy(corpus, spool)
            db = os.path.join(base, f"drain.{cand}.{i}")
            r = in_child(drain_in_process, cand, spool, db, args.events, args.batch_events, wave1)
            runs[cand].append(r)
            shutil.rmtree(spool, ignore_errors=True)
            for leftover in (db, db + "-wal", db + "-shm"):
                if os.path.isfile(leftover):
                    os.unlink(leftover)
            if os.path.isdir(db):            # DuckDB's candidate may keep a directory
                shutil.rmtree(db, ignore_errors=True)
            if args.drain_rounds > 1:
                print(f"  round {i + 1} {cand:11s}: {r['cpu_us_per_event']:5.1f} µs CPU/event")
    out = {}
    for cand, rs in runs.items():
        r = out[cand] = sorted(rs, key=lambda x: x["cpu_us_per_event"])[len(rs) // 2]
        print(f"  drain {cand:11s}: {r['events_per_s']:8,.0f} events/s, "
              f"{r['cpu_us_per_event']:5.1f} µs CPU/event, "
              f"{r['bytes_per_event']:5.0f} bytes/event (waited for the core "
              f"{r['core_waited']:.0%} of the time)")
    return out


def reports_section(args, base, candidates):
    spool_src = os.path.join(base, "reports")
    now = 1_795_000_000_000
    n = store_corpus.write_spool(spool_src, "reports", args.report_events, now_ms=now,
                                 rate=args.report_events / (7 * 86400))
    start, end = now - 86_400_000, now + 8 * 86_400_000
    print(f"reports mix: {n} events over 7 days")
    out = {}
    for cand in candidates:
        spool = os.path.join(base, f"rspool-{cand}")
        link_copy(spool_src, spool)
        db = os.path.join(base, f"reports.{cand}")
        fill = in_child(drain_in_process, cand, spool, db, n, args.batch_events)
        times = in_child(time_reports, cand, db, start, end)
        out[cand] = {"fill": fill, "times": times}
        print(f"  {cand:7s}: filled at {fill['events_per_s']:,.0f} events/s, "
              f"{fill['cpu_us_per_event']:.1f} µs CPU/event, {fill['bytes_per_event']:.0f} "
              f"bytes/event; reports with a writer appending: " +
              ", ".join(f"{k} {t:.2f} s" for k, (t, _) in times.items()))
        worst = max(t for t, _ in times.values())
        out[cand]["slowest_s"] = worst
    if len(candidates) > 1:
        print("  slowest report: " + ", ".join(
            f"{c} {out[c]['slowest_s']:.2f} s" for c in candidates))
    return out


if __name__ == "__main__":
    main()
