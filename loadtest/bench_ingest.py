"""Ingest benchmark: the tracked request path against nginx, in one run.

    python loadtest/bench_ingest.py [--duration 8] [--rounds 3] [--connections 64]
        [--servers nginx,spool,sqlite] [--modes plain,tls,plain-close,tls-close]
        [--before DIR] [--latency [--stalls]] [--prefill N] [--json FILE]

Servers, each with one worker process pinned to cpu 1 (wrk on cpu 0):
- ``nginx``: nginx's empty_gif at /pixel.gif, with a buffered access-log line
  per request (an access log is what a tracking pixel on nginx would keep);
- ``uvloop``: loadtest/bare_uvloop.py, a bare uvloop protocol answering a fixed
  200 with no parsing and no store: what uvloop's transports cost alone;
- ``spool``: the collector with ``Notify: []``: parse, spool (fdatasync'ed
  group commit) and answer, the ingest path alone;
- ``sqlite``: the collector with its embedded SQLite store; its CPU includes
  the store process, counted until every accepted event is written;
- ``spool-pygc``, ``sqlite-pygc``: the same with CPython's garbage-collector
  defaults (``TRACKER_GC=python``; engine/system/gc_tuning.py), for an A/B;
- ``sqlite-pure``: ``sqlite`` with the store's pure-Python batch writer
  (``TRACKER_PURE_SQLITE=1``) instead of the compiled one, for an A/B;
- ``before``, ``before-sqlite``: ``--before DIR``, a checkout of an earlier
  version with its own ``.venv`` (``tracker`` from there), run as ``spool``
  and as ``sqlite`` are.

Requests come from loadtest/visitors.lua: generated visitors (40 % new, the
others with a cookie from a pool of 20,000), 500 pages, 50 referrers, a uid,
lat/lon and score per request; nginx gets the same generated path. Modes:
``plain``/``tls`` keep-alive, ``-close`` a new connection per request.
``--prefill N``: every SQLite server starts on a copy of one file already
holding N events (loadtest/store_corpus.py's visitors mix, written by this
checkout's store), as a node that has run for a while: the store's cost per
event grows with its file (docs/storage.md), which a new file hides.

Reported per server and mode (medians over interleaved rounds): requests/s,
p50/p99 (wrk, at saturation), server CPU per request (the whole process tree,
from /proc) and its ratio to nginx's in the same mode. ``--latency`` adds a
constant-rate run at half of each server's measured peak with ``oha``
(``cargo install oha --locked``), corrected for coordinated omission, and
reports its p50/p99 (keep-alive modes: one oha cannot open connections at
half these servers' peaks); ``--stalls`` also keeps every request oha sent
and counts the 50 ms windows that hold one slower than 5 ms, so a tail the
bare ``uvloop`` server shows too reads as the machine's. The machine is
shared: quote ratios and medians.
"""
import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loadtest.bench_http import (CLK_TCK, checkout_tracker, children, cpu_seconds,  # noqa: E402
                                 free_port, parse_wrk, pin)
from loadtest.bench_tls import self_signed  # noqa: E402
from loadtest.run import nginx_binary, wait_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "visitors.lua")
MODES = ("plain", "tls", "plain-close", "tls-close")


class Nginx:
    """nginx, one worker, empty_gif at /pixel.gif, a buffered access log."""
    name = "nginx"

    def __init__(self, directory, cert):
        self.dir = directory
        self.port, self.tls_port = free_port(), free_port()
        os.makedirs(directory, exist_ok=True)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(f"  {k}_temp_path {directory}/{k};"
                         for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = os.path.join(directory, "nginx.conf")
        with open(conf, "w") as fh:
            fh.write(f"""worker_processes 1;
{user}daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 8192; }}
http {{
{temp}
  access_log {directory}/access.log combined buffer=64k flush=1s;
  keepalive_timeout 60s;
  keepalive_requests 100000000;
  server {{
    listen 127.0.0.1:{self.port} reuseport;
    listen 127.0.0.1:{self.tls_port} ssl reuseport;
    ssl_certificate {cert[0]};
    ssl_certificate_key {cert[1]};
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /pixel.gif {{ empty_gif; add_header Cache-Control "no-store"; }}
    location / {{ return 404; }}
  }}
}}
""")
        self.proc = subprocess.Popen(pin("1") + [nginx_binary(), "-p", directory, "-c", conf,
                                                 "-e", os.path.join(directory, "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        wait_port(self.tls_port, self.proc)

    def url(self, tls):
        return (f"https://127.0.0.1:{self.tls_port}" if tls else f"http://127.0.0.1:{self.port}")

    lua_target = "nginx"
    track_path = "/pixel.gif?p=/ename/view"

    def cpu(self):
        return cpu_seconds([self.proc.pid] + children(self.proc.pid))

    def settle(self):
        pass

    def stop(self):
        return stop_process(self.proc, signal.SIGQUIT)      # nginx's graceful stop


class BareUvloop:
    """loadtest/bare_uvloop.py: a bare uvloop protocol answering every request
    with a fixed 200, no parsing, no store (the floor under the collector's
    HTTP layer)."""
    name = "uvloop"
    lua_target = "nginx"                 # any path: the same generated requests
    track_path = "/pixel.gif?p=/ename/view"

    def __init__(self, cert):
        self.port, self.tls_port = free_port(), free_port()
        self.proc = subprocess.Popen(pin("1") + [sys.executable, os.path.join(HERE, "bare_uvloop.py"),
                                                 str(self.port), str(self.tls_port), *cert])
        wait_port(self.port, self.proc)
        wait_port(self.tls_port, self.proc)

    def url(self, tls):
        return (f"https://127.0.0.1:{self.tls_port}" if tls else f"http://127.0.0.1:{self.port}")

    def cpu(self):
        return cpu_seconds([self.proc.pid])

    def settle(self):
        pass

    def stop(self):
        return stop_process(self.proc, signal.SIGTERM)


def stop_process(proc, sig, grace=20):
    """Send ``sig``; the exit code, after a SIGKILL if ``grace`` s pass first."""
    proc.send_signal(sig)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Collector:
    """``tracker serve`` with one HTTP worker, plain HTTP or local TLS (with
    TLS on, the plain port only redirects, so each mode has its own process)."""

    def __init__(self, directory, cert, notify, tracker, tls, env=None, prefill=None):
        os.makedirs(directory, exist_ok=True)
        self.tls = tls
        self.port = free_port()
        self.tls_port = free_port()
        self.db = os.path.join(directory, "tracker.db") if notify else None
        self.prefilled = 0
        if notify and prefill:
            shutil.copy(prefill[0], self.db)
            self.prefilled = prefill[1]
        config = {"TLS": "off", "ProxyPort": f"127.0.0.1:{self.port}",
                  "LogLevel": "warning", "MaximumConnections": 0,
                  "Notify": [{"Service": "sqlite", "Path": self.db}] if notify else []}
        if tls:
            config.update({"TLS": "local", "TLSCert": cert[0], "TLSKey": cert[1],
                           "ProxyPortTLS": f"127.0.0.1:{self.tls_port}"})
        path = os.path.join(directory, "config.json")
        with open(path, "w") as fh:
            json.dump(config, fh)
        self.log = open(os.path.join(directory, "tracker.log"), "wb")
        self.proc = subprocess.Popen(pin("1") + [tracker, "serve", "--config", path,
                                                 "--workers", "1"],
                                     stdout=self.log, stderr=self.log,
                                     env=None if env is None else {**os.environ, **env})
        wait_port(self.tls_port if tls else self.port, self.proc, timeout=60)

    @property
    def base(self):
        return f"https://127.0.0.1:{self.tls_port}" if self.tls else f"http://127.0.0.1:{self.port}"

    def cpu(self):
        pids = [self.proc.pid]
        for child in children(self.proc.pid):
            pids += [child] + children(child)
        return cpu_seconds(pids)

    def metrics(self):
        import ssl
        with urllib.request.urlopen(self.base + "/metrics", timeout=10,
                                    context=ssl._create_unverified_context()) as r:
            return r.read().decode()

    def settle(self, timeout=300):
        """Wait until the store wrote every accepted event (sqlite)."""
        if self.db is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.metrics()
            accepted = _metric(text, r"tracker_events_total")
            written = _metric(text, r'tracker_sink_events_written_total\{sink="sqlite"\}')
            if written >= accepted:
                return
            time.sleep(0.2)
        raise SystemExit(f"the store did not catch up in {timeout} s")

    def stored(self):
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] - self.prefilled

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        finally:
            self.log.close()


class CollectorPair:
    """A collector configuration as a server of this benchmark: a plain and a
    TLS process, started only for the modes asked."""
    lua_target = "tracker"
    track_path = "/tr/v1/ename/view"

    def __init__(self, name, directory, cert, notify, tracker, modes, env=None, prefill=None):
        self.name = name
        self.plain = self.secure = None
        if any(not m.startswith("tls") for m in modes):
            self.plain = Collector(os.path.join(directory, "plain"), cert, notify, tracker, False,
                                   env, prefill)
        if any(m.startswith("tls") for m in modes):
            self.secure = Collector(os.path.join(directory, "tls"), cert, notify, tracker, True,
                                    env, prefill)
        self.db = notify or None
        self.active = None

    def url(self, tls):
        self.active = self.secure if tls else self.plain
        return self.active.base

    def cpu(self):
        return sum(c.cpu() for c in (self.plain, self.secure) if c is not None)

    def settle(self):
        if self.active is not None:
            self.active.settle()

    def stored(self):
        return sum(c.stored() for c in (self.plain, self.secure) if c is not None)

    def stop(self):
        codes = [c.stop() for c in (self.plain, self.secure) if c is not None]
        return next((code for code in codes if code), 0)


def _metric(text, pattern):
    m = re.search(rf"^{pattern} ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def run_wrk(server, mode, args, tag):
    tls = mode.startswith("tls")
    cmd = pin("0") + ["wrk", "-t1", f"-c{args.connections}", f"-d{max(1, round(args.duration))}s",
                      "--latency", "-s", LUA]
    if mode.endswith("close"):
        cmd += ["-H", "Connection: close"]
    cmd += [server.url(tls), "--", server.lua_target, "40", tag]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def core_busy(cpu=1):
    """Seconds cpu ``cpu`` spent not idle (user, system, irq, softirq, ...),
    from /proc/stat: the kernel's network work done on the server's core is
    counted whichever process it interrupted, and not lost when it ran while
    the server slept (per-process times miss or misplace softirq time)."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(x) for x in line.split()[1:]]
                idle = ticks[3] + ticks[4]            # idle, iowait
                return (sum(ticks[:8]) - idle) / CLK_TCK
    return 0.0


def quiet_disk():
    """Write back what the last server left dirty (nginx's access log: ~100
    MB a round) before the next one is measured: its writeback otherwise
    lands on the next server's fsyncs, a stall of tens of ms in ~1 round of
    4 of whichever server follows nginx (2026-12-02, the order swapped)."""
    os.sync()


def measure(server, mode, args, tag):
    quiet_disk()
    before, busy = server.cpu(), core_busy()
    result = run_wrk(server, mode, args, tag)
    server.settle()
    n = max(1, result["requests"])
    result["cpu_us_per_req"] = (server.cpu() - before) * 1e6 / n
    result["core_us_per_req"] = (core_busy() - busy) * 1e6 / n
    return result


def oha_binary():
    found = shutil.which("oha") or shutil.which("oha", path=os.path.expanduser("~/.cargo/bin"))
    if not found:
        raise SystemExit("--latency needs oha (cargo install oha --locked)")
    return found


def constant_rate(server, mode, rate, args):
    """oha at ``rate`` req/s for --latency-seconds, corrected for coordinated
    omission: (p50 ms, p99 ms, non-2xx share, 2xx/3xx answers)."""
    tls = mode.startswith("tls")
    quiet_disk()
    cmd = pin("0") + [oha_binary(), "--no-tui", "-q", str(int(rate)), "-z", f"{args.latency_seconds}s",
                      "-c", str(args.connections), "--latency-correction", "--insecure",
                      "--output-format", "json"]
    requests_db = None
    if args.stalls:
        requests_db = os.path.join(tempfile.mkdtemp(prefix="oha-"), "requests.db")
        cmd += ["--db-url", requests_db]
    cmd.append(server.url(tls) + server.track_path)
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    pct = out["latencyPercentiles"]
    codes = out.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith(("2", "3")))
    total = sum(codes.values()) or 1
    stalls = None
    if requests_db:
        stalls = slow_windows(requests_db)
        shutil.rmtree(os.path.dirname(requests_db), ignore_errors=True)
    return pct["p50"] * 1e3, pct["p99"] * 1e3, 1 - ok / total, ok, stalls


STALL_WINDOW = 0.05         # s of send time
STALL_LATENCY = 0.005       # s: a request slower than this marks its window


def slow_windows(path):
    """From oha's per-request table: (windows of STALL_WINDOW s of send time
    holding a request slower than STALL_LATENCY, corrected for coordinated
    omission; the share of all requests that were that slow; seconds covered). A
    server whose slow requests all fall in the few windows a bare server
    shows too is waiting on the machine, not on itself."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT COALESCE(start_latency_correction, start), end FROM oha").fetchall()
    if not rows:
        return (0, 0.0, 0.0)
    t0 = min(r[0] for r in rows)
    slow = [int((sent - t0) / STALL_WINDOW) for sent, end in rows if end - sent > STALL_LATENCY]
    windows = set(slow)
    span = max(r[0] for r in rows) - t0
    return (len(windows), len(slow) / len(rows), span)


SERVERS = ("nginx", "uvloop", "spool", "sqlite", "spool-pygc", "sqlite-pygc", "sqlite-pure",
           "before", "before-sqlite")


def check_servers(names, before):
    """Every name known and ``--before``'s checkout usable, before any server
    starts (a SystemExit later would leave the ones started running); the
    checkout's ``tracker`` or None."""
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown server {unknown[0]!r} (known: {', '.join(SERVERS)})")
    wants_before = [n for n in names if n.startswith("before")]
    if wants_before and not before:
        raise SystemExit(f"--servers {wants_before[0]} needs --before DIR")
    return checkout_tracker(before) if wants_before else None


def start_servers(names, directory, cert, before, modes, prefill=None):
    """The servers, in order; ``before`` is check_servers' tracker, ``prefill``
    (path, events) the file every SQLite server starts on a copy of."""
    tracker = shutil.which("tracker", path=os.path.dirname(sys.executable)) or "tracker"
    servers = []
    for name in names:
        where = os.path.join(directory, name)
        if name == "nginx":
            servers.append(Nginx(where, cert))
        elif name == "uvloop":
            servers.append(BareUvloop(cert))
        elif name in ("spool", "sqlite"):
            servers.append(CollectorPair(name, where, cert, name == "sqlite", tracker, modes,
                                         prefill=prefill))
        elif name in ("spool-pygc", "sqlite-pygc"):      # CPython's GC defaults: the A/B
            servers.append(CollectorPair(name, where, cert, name == "sqlite-pygc", tracker, modes,
                                         {"TRACKER_GC": "python"}, prefill))
        elif name == "sqlite-pure":          # the store's pure-Python writer: the A/B
            servers.append(CollectorPair(name, where, cert, True, tracker, modes,
                                         {"TRACKER_PURE_SQLITE": "1"}, prefill))
        else:                                # before, before-sqlite
            servers.append(CollectorPair(name, where, cert, name == "before-sqlite",
                                         before, modes, prefill=prefill))
    return servers


def prefilled_store(directory, events):
    """(path, events): a SQLite file written by this checkout's store with
    ``events`` of the visitors mix (returning visitors from a pool, as
    visitors.lua's), closed (checkpointed) so that copies of it are whole."""
    import random
    from engine import _parse
    from loadtest import store_corpus

    path = os.path.join(directory, "prefill.db")
    records = store_corpus.MIXES["visitors"](events, random.Random(7), _parse.TimeUUIDGen(),
                                             int(time.time() * 1000) - 86_400_000, 15000)
    store_corpus.fill_sqlite(path, records, 20_000, store_corpus.store_stage_prepare())
    with sqlite3.connect(path) as conn:
        return path, conn.execute("SELECT COUNT(*) FROM ev").fetchone()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--servers", default="nginx,spool,sqlite")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--before", help="a checkout of an earlier version with its own .venv")
    ap.add_argument("--latency", action="store_true", help="constant-rate p99 with oha")
    ap.add_argument("--latency-seconds", type=int, default=10)
    ap.add_argument("--stalls", action="store_true",
                    help="with --latency: count the 50 ms windows of send time that hold a "
                         "request slower than 5 ms (oha --db-url keeps every request)")
    ap.add_argument("--prefill", type=int, default=0,
                    help="SQLite servers start on a copy of a file holding this many events")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    if args.stalls and not args.latency:
        raise SystemExit("--stalls counts the --latency run's slow requests: add --latency")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian package: wrk)")
    names = args.servers.split(",")
    modes = args.modes.split(",")
    before = check_servers(names, args.before)
    directory = tempfile.mkdtemp(prefix="tracker-ingest-")
    cert = self_signed(directory)
    prefill = None
    if args.prefill:
        started = time.monotonic()
        prefill = prefilled_store(directory, args.prefill)
        print(f"prefilled store: {prefill[1]} events in {time.monotonic() - started:.0f} s",
              flush=True)
    servers = start_servers(names, directory, cert, before, modes, prefill)
    runs = {(s.name, m): [] for s in servers for m in modes}
    codes = {}
    try:
        for r in range(args.rounds):
            for mode in modes:
                for server in servers:
                    runs[(server.name, mode)].append(measure(server, mode, args, f"{r}{mode}"))
                    last = runs[(server.name, mode)][-1]
                    print(f"round {r + 1} {mode:12} {server.name:7} {last['rps']:9.0f} req/s "
                          f"{last['cpu_us_per_req']:6.1f} us/req  p99 {last['p99_ms']:6.2f} ms",
                          flush=True)
        latency = {}
        if args.latency:
            # Keep-alive modes only: oha opening a connection per request
            # cannot keep up with half of these servers' peaks on one core
            # (tens of thousands of connections a second), so its figures
            # there measured the client's backlog, seconds long for nginx too.
            for mode in (m for m in modes if not m.endswith("close")):
                for server in servers:
                    peak = statistics.median(x["rps"] for x in runs[(server.name, mode)])
                    latency[(server.name, mode)] = (peak / 2,) + constant_rate(
                        server, mode, peak / 2, args)
                    server.settle()       # its events written before the count below
        stored = {s.name: s.stored() for s in servers if getattr(s, "db", None)}
    finally:
        for server in servers:
            codes[server.name] = server.stop()
    report = summarise(runs, latency, stored, codes, args)
    report["latency_answered"] = {name: sum(v[4] for (n, _m), v in latency.items() if n == name)
                                  for name in stored}
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    check(report, runs, args)


def summarise(runs, latency, stored, codes, args):
    rows = []
    for (name, mode), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "core_us_per_req")}
        nginx = runs.get(("nginx", mode))
        if nginx:
            for key, ratio in (("cpu_us_per_req", "nginx_cpu_ratio"),
                               ("core_us_per_req", "nginx_core_ratio")):
                base = statistics.median(r[key] for r in nginx)
                med[ratio] = base / med[key]      # >1 is cheaper than nginx
        if (name, mode) in latency:
            rate, p50, p99, refused, _ok, stalls = latency[(name, mode)]
            med.update(rate=rate, cr_p50_ms=p50, cr_p99_ms=p99, cr_refused=refused)
            if stalls is not None:
                med.update(slow_windows=stalls[0], slow_share=stalls[1], latency_span_s=stalls[2])
        med["non2xx"] = sum(r["non2xx"] for r in rs)
        med["answered"] = sum(r["requests"] - r["non2xx"] for r in rs)
        rows.append({"server": name, "mode": mode, **med})
    return {"config": vars(args), "rows": rows, "stored": stored, "exit_codes": codes}


def format_report(rep):
    c = rep["config"]
    lines = [f"wrk -t1 -c{c['connections']} with loadtest/visitors.lua, {c['rounds']} rounds x "
             f"{c['duration']} s, one worker on cpu 1; medians",
             f"{'mode':12} {'server':7} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
             f"{'us/req':>7} {'nginx/us':>8} {'core us':>7} {'nginx/core':>10}" +
             (f" {'rate':>7} {'cr p50':>7} {'cr p99':>7}" if c["latency"] else "") +
             (f" {'slow windows':>11}" if c.get("stalls") else "")]
    for row in sorted(rep["rows"], key=lambda r: (MODES.index(r["mode"]) if r["mode"] in MODES
                                                  else 9, r["server"])):
        line = (f"{row['mode']:12} {row['server']:7} {row['rps']:9.0f} {row['p50_ms']:7.2f} "
                f"{row['p99_ms']:7.2f} {row['cpu_us_per_req']:7.2f} "
                f"{row.get('nginx_cpu_ratio', float('nan')):8.2f} {row['core_us_per_req']:7.2f} "
                f"{row.get('nginx_core_ratio', float('nan')):10.2f}")
        if "rate" in row:
            line += f" {row['rate']:7.0f} {row['cr_p50_ms']:7.2f} {row['cr_p99_ms']:7.2f}"
        if "slow_windows" in row:
            line += f" {row['slow_windows']:5d}/{row['latency_span_s'] / STALL_WINDOW:<5.0f}"
        lines.append(line)
    lines.append("us/req: CPU of the server's processes per request; core us: all non-idle "
                 "time of cpu 1 per request (network softirqs counted wherever they ran); "
                 "nginx/...: nginx's figure / this server's (1.00 = as cheap as nginx)")
    if c.get("stalls"):
        lines.append("slow windows: 50 ms windows of send time holding a request slower than "
                     "5 ms / all windows of the constant-rate run (compare with uvloop's)")
    if rep["stored"]:
        lines.append(f"stored events: {rep['stored']}; exit codes: {rep['exit_codes']}")
    return "\n".join(lines)


def check(report, runs, args):
    """Every 2xx/3xx a store answered must be stored (wrk may stop counting
    up to one request per connection per run that the server answered)."""
    failed = []
    for name, count in report["stored"].items():
        answered = sum(r["requests"] - r["non2xx"] for (n, _m), rs in runs.items()
                       if n == name for r in rs)
        answered += report.get("latency_answered", {}).get(name, 0)   # oha's, --latency
        runs_per_mode = args.rounds + (1 if args.latency else 0)
        slack = args.connections * runs_per_mode * len(args.modes.split(","))
        if not answered <= count <= answered + slack:
            failed.append(f"{name}: {answered} answered, {count} stored")
    bad = [n for n, code in report["exit_codes"].items() if code not in (0, None)]
    if bad:
        failed.append(f"exit codes {report['exit_codes']}")
    if failed:
        raise SystemExit("FAILED: " + "; ".join(failed))


if __name__ == "__main__":
    main()
