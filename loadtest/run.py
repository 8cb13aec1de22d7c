"""Benchmark runner: the collector against a static nginx ceiling, in one run.

For each worker count it starts `tracker serve` (a temporary SQLite store, the
rest of the config from --config) and nginx serving the same 1x1 GIF from a
fixed location (its own config in a temp dir, same worker count, same cores),
then, in interleaved rounds, for keep-alive and new-connection-per-request
(`Connection: close`) and each concurrency:

  * wrk with loadtest/mixed.lua: the mixed tracked routes against the collector,
    and the same script's `ceiling` mode (GET /pixel.gif) against nginx;
  * locust (loadtest/locustfile.py, headless, bounded) against the collector:
    realistic visitors, checked marker by marker.

It reports requests/s, p50/p90/p99 latency, events persisted per second (rows
counted after the drain), server CPU seconds per 1M events (the server's whole
process tree, from /proc), the ratio to the nginx ceiling and connections per
second per server-month-dollar. Stored rows must equal the 2xx/3xx answers, or
it fails (exit status 1). Medians over --rounds are quoted. Everything runs on
127.0.0.1, bounded in time; servers are stopped when it ends.

    python -m loadtest.run                  # full run (about 10 minutes)
    python -m loadtest.run --smoke          # seconds: it works, every 2xx was stored

Results: <out>/<name>.json and <out>/<name>.png (default loadtest/results/latest.*).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_http  # noqa: E402  (Server, cpu_seconds, children, free_port)

LUA = os.path.join(HERE, "mixed.lua")
LOCUSTFILE = os.path.join(HERE, "locustfile.py")
DEFAULT_WEIGHTS = "tuplet=40,post=25,pixel=25,redirect=8,bad=2"
REDIRECT_HOST = "example.com"
TRACKED_ROUTES = ("track", "img", "rdr")
# The default price is an assumption, not a measurement: a list price, not checked at run time.
DEFAULT_PRICE_USD = 18.0
DEFAULT_PRICE_SOURCE = ("assumed: DigitalOcean Basic Droplet, 2 vCPU / 2 GiB, USD 18 per month "
                        "(the provider's published list price in 2024; not checked at run time "
                        "- pass --price-usd/--price-source for yours)")


# ---- processes -----------------------------------------------------------------
def pin(cpus):
    if cpus and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpus]
    return []


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Collector(bench_http.Server):
    """`tracker serve` on a free loopback port, pinned, with a temporary SQLite store."""

    def __init__(self, workers, directory, base_config, cpus):
        self.dir = directory
        self.port = bench_http.free_port()
        self.db = os.path.join(directory, "tracker.db")
        config = {k: v for k, v in base_config.items() if k not in ("ProxyPort", "ProxyPortTLS")}
        config.update({"TLS": "off", "LogLevel": "warning",
                       "Notify": [{"Service": "sqlite", "Path": self.db, "Critical": True}],
                       "RedirectHosts": sorted(set(config.get("RedirectHosts") or
                                                   config.get("Domains") or []) | {REDIRECT_HOST})})
        self.settings = config
        self.config = os.path.join(directory, "config.json")
        with open(self.config, "w") as fh:
            json.dump(config, fh)
        cmd = pin(cpus) + bench_http.tracker_command() + [
            "serve", "--config", self.config, "--workers", str(workers),
            "--listen", f"127.0.0.1:{self.port}"]
        self.log = open(os.path.join(directory, "tracker.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        self.wait_ready(workers)

    def metrics(self):
        """{(name, labels-text): value} from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for m in re.finditer(r"^(\w+)(\{[^}]*\})? ([\d.e+-]+)$", text, re.M):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
        return out

    def answered_tracked(self):
        """Tracked requests the collector answered 2xx/3xx (its own count)."""
        total = 0
        for (name, labels), value in self.metrics().items():
            if name != "tracker_requests_total":
                continue
            route = re.search(r'route="(\w+)"', labels).group(1)
            status = int(re.search(r'status="(\d+)"', labels).group(1))
            if route in TRACKED_ROUTES and 200 <= status < 400:
                total += value
        return int(total)

    def stored(self):
        """{marker: (vid, count)} of every stored event."""
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT json_extract(params, '$.m'), vid, COUNT(*) FROM events "
                                "GROUP BY 1, 2").fetchall()
        return {m: (vid, n) for m, vid, n in rows}

    def stop(self):
        try:
            return super().stop()
        finally:
            self.log.close()


class Nginx:
    """nginx serving the collector's own 1x1 GIF at /pixel.gif, everything in a temp dir.

    ``locations``: other nginx directives for the server block (port -> text),
    e.g. a reverse proxy's ``location / { proxy_pass ...; }`` (bench_proxy.py)."""

    def __init__(self, workers, directory, cpus, locations=None, http_extra=""):
        from engine.http.responses import PIXEL_GIF
        self.dir = directory
        self.port = bench_http.free_port()
        www = os.path.join(directory, "www")
        os.makedirs(www)
        with open(os.path.join(www, "pixel.gif"), "wb") as fh:
            fh.write(PIXEL_GIF)
        for path in (directory, www):           # nginx's workers run as nobody
            os.chmod(path, 0o755)
        os.chmod(os.path.join(www, "pixel.gif"), 0o644)
        temp = "\n".join(f"  {kind}_temp_path {directory}/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = os.path.join(directory, "nginx.conf")
        # Started as root, nginx's workers switch to "nobody", who cannot enter a
        # 0700 temporary directory: every answer would be a 403. Keep our user.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as fh:
            fh.write(f"""worker_processes {workers};
{user}daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp}
  keepalive_timeout 60s;
  keepalive_requests 100000000;
{http_extra}
  server {{
    listen 127.0.0.1:{self.port} reuseport;
    location = /pixel.gif {{
      root {www};
      default_type image/gif;
      add_header Cache-Control "no-store";
    }}
    {locations or "location / { return 404; }"}
  }}
}}
""")
        self.proc = subprocess.Popen(pin(cpus) + [nginx_binary(), "-p", directory, "-c", conf,
                                                  "-e", os.path.join(directory, "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def cpu(self):
        return bench_http.cpu_seconds([self.proc.pid] + bench_http.children(self.proc.pid))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)        # graceful shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def nginx_binary():
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None)


# ---- wrk -----------------------------------------------------------------------
def parse_wrk(text):
    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m \
            else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"requests": int(re.search(r"(\d+) requests in", text).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
            "p50_ms": latency(50), "p90_ms": latency(90), "p99_ms": latency(99),
            "non2xx3xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0}


def run_wrk(port, script_mode, mode, concurrency, args, tag):
    cmd = pin(args.client_cpus) + ["wrk", f"-t{args.wrk_threads}", f"-c{concurrency}",
                                   f"-d{args.duration}s", "--timeout", "5s", "--latency",
                                   "-s", LUA]
    if mode == "close":
        cmd += ["-H", "Connection: close"]
    cmd += [f"http://127.0.0.1:{port}/", "--", script_mode, args.weights, tag]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def measure_collector(server, mode, concurrency, args, tag):
    rows0, cpu0, t0 = len_rows(server), server.cpu(), time.monotonic()
    r = run_wrk(server.port, "mixed", mode, concurrency, args, tag)
    server.wait_written()
    elapsed, cpu, rows = time.monotonic() - t0, server.cpu() - cpu0, len_rows(server) - rows0
    r.update(cpu_s=cpu, events=rows, answered_2xx3xx=r["requests"] - r["non2xx3xx"],
             events_per_s=rows / elapsed,
             cpu_us_per_req=cpu * 1e6 / max(1, r["requests"]),
             cpu_s_per_1m_events=cpu * 1e6 / max(1, rows))
    return r


def measure_nginx(server, mode, concurrency, args, tag):
    cpu0 = server.cpu()
    r = run_wrk(server.port, "ceiling", mode, concurrency, args, tag)
    cpu = server.cpu() - cpu0
    if r["non2xx3xx"]:    # a ceiling made of error pages measures nothing
        raise RuntimeError(f"nginx answered {r['non2xx3xx']} non-2xx/3xx of {r['requests']}: "
                           f"see {server.dir}/error.log")
    r.update(cpu_s=cpu, cpu_us_per_req=cpu * 1e6 / max(1, r["requests"]),
             cpu_s_per_1m_events=cpu * 1e6 / max(1, r["requests"] - r["non2xx3xx"]))
    return r


def len_rows(server):
    with sqlite3.connect(server.db) as conn:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


# ---- locust --------------------------------------------------------------------
def run_locust(server, directory, args):
    ledger = os.path.join(directory, "locust-ledger.jsonl")
    env = {**os.environ, "TRACKER_LOCUST_LEDGER": ledger, "TRACKER_LOCUST_WEIGHTS": args.weights,
           "TRACKER_REDIRECT_HOST": REDIRECT_HOST}
    locust = shutil.which("locust", path=os.path.dirname(sys.executable)) or "locust"
    cmd = pin(args.client_cpus) + [
        locust, "-f", LOCUSTFILE, "--headless", "-u", str(args.locust_users),
        "-r", str(args.locust_users), "-t", f"{args.locust_seconds}s", "--stop-timeout", "10",
        "--host", f"http://127.0.0.1:{server.port}", "--only-summary",
        "--loglevel", "WARNING"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=args.locust_seconds + 90)
    if not os.path.exists(ledger):
        raise RuntimeError(f"locust wrote no ledger ({done.returncode}): {done.stderr[-2000:]}")
    with open(ledger) as fh:
        entries = [json.loads(line) for line in fh]
    answered = [e for e in entries if e["ms"] is not None]
    ms = sorted(e["ms"] for e in answered) or [float("nan")]
    span = (max(e["t"] + e["ms"] / 1000 for e in answered) - min(e["t"] for e in answered)
            if answered else 0)

    def pct(p):
        return ms[min(len(ms) - 1, int(p / 100 * len(ms)))]
    # Figures from the ledger (every request the users sent), not locust's own stats.
    return {"exit_code": done.returncode, "requests": len(entries),
            "failures": sum(1 for e in entries if e["problem"]),
            "failure_examples": sorted({e["problem"] for e in entries if e["problem"]})[:5],
            "rps": len(answered) / span if span else 0.0,
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "users": args.locust_users, "seconds": args.locust_seconds,
            "stderr_tail": done.stderr.strip().splitlines()[-5:] if done.returncode else []}, entries


def check_locust(entries, stored):
    """Stored L-markers must be exactly the 2xx/3xx answers, under the vid the visitor holds."""
    ok = {e["m"]: e for e in entries if e["status"] and 200 <= e["status"] < 400}
    in_flight = {e["m"] for e in entries if e["status"] is None}
    mine = {m: v for m, v in stored.items() if m and m.startswith("L")}
    problems = []
    missing = sorted(set(ok) - set(mine))
    extra = sorted(set(mine) - set(ok) - in_flight)
    twice = sorted(m for m, (_, n) in mine.items() if n > 1)
    wrong_vid = sorted(m for m, e in ok.items() if m in mine and mine[m][0] != e["vid_set"])
    kept = sum(1 for e in ok.values() if e["vid_sent"])
    for label, items in (("answered 2xx/3xx but not stored", missing),
                         ("stored but not answered 2xx/3xx", extra),
                         ("stored more than once", twice),
                         ("stored under another vid than the cookie", wrong_vid)):
        if items:
            problems.append(f"locust: {len(items)} {label}, e.g. {items[:3]}")
    return {"answered_2xx3xx": len(ok), "stored": len(mine), "in_flight_at_stop": len(in_flight),
            "bad_requests_400": sum(1 for e in entries if e["status"] == 400),
            "returning_with_cookie": kept}, problems


# ---- one worker count ----------------------------------------------------------
def bench_workers(workers, base_config, args, base_dir, use_nginx):
    directory = os.path.join(base_dir, f"w{workers}")
    os.makedirs(os.path.join(directory, "collector"))
    collector = Collector(workers, os.path.join(directory, "collector"), base_config,
                          args.server_cpus)
    nginx = None
    runs, problems, result = [], [], {"workers": workers}
    try:
        if use_nginx:
            nginx = Nginx(workers, os.path.join(directory, "nginx"), args.server_cpus)
        if "wrk" in args.tools:
            for rnd in range(args.rounds):
                for mode in args.modes:
                    for c in args.concurrency:
                        tag = f"Ww{workers}r{rnd}{mode[0]}c{c}"
                        r = measure_collector(collector, mode, c, args, tag)
                        runs.append({"server": "collector", "workers": workers, "mode": mode,
                                     "concurrency": c, "round": rnd, **r})
                        lo, hi = r["answered_2xx3xx"], r["answered_2xx3xx"] + c + r["socket_errors"]
                        if not lo <= r["events"] <= hi:
                            problems.append(f"{tag}: {r['events']} rows stored for "
                                            f"{r['answered_2xx3xx']} 2xx/3xx seen by wrk "
                                            f"(allowed: up to {c} in flight at wrk's deadline)")
                        if nginx:
                            runs.append({"server": "nginx", "workers": workers, "mode": mode,
                                         "concurrency": c, "round": rnd,
                                         **measure_nginx(nginx, mode, c, args, tag)})
                        progress(runs[-2:] if nginx else runs[-1:])
        if "locust" in args.tools:
            result["locust"], entries = run_locust(collector, directory, args)
            print(f"  locust: {result['locust']['requests']} requests, "
                  f"{result['locust']['rps']:.0f}/s, {result['locust']['failures']} failures",
                  flush=True)
        answered, accepted = settled_counts(collector)
    finally:
        code = collector.stop()
        if nginx:
            nginx.stop()
    stored = collector.stored()
    rows = sum(n for _, n in stored.values())
    twice = [m for m, (_, n) in stored.items() if n > 1]
    result["store"] = {"rows": rows, "distinct_markers": len(stored),
                       "collector_answered_2xx3xx": answered, "collector_accepted": accepted,
                       "collector_exit_code": code}
    if rows != answered or rows != accepted:
        problems.append(f"workers={workers}: {rows} rows stored, but the collector answered "
                        f"{answered} tracked requests 2xx/3xx and accepted {accepted} events")
    if twice:
        problems.append(f"workers={workers}: {len(twice)} markers stored twice, e.g. {twice[:3]}")
    if code != 0:
        problems.append(f"workers={workers}: collector exited with {code}")
    if "locust" in result:
        result["locust_check"], more = check_locust(entries, stored)
        problems += more
        if result["locust"]["failures"]:
            problems.append(f"locust: {result['locust']['failures']} requests failed their checks: "
                            f"{result['locust']['failure_examples']}")
    result["durability"] = collector.settings.get("Durability", "default")
    return runs, result, problems


def settled_counts(collector, timeout=5.0):
    """The collector's own counts of tracked 2xx/3xx answers and accepted events, once
    every worker has published them (they do so twice a second) and the store caught up."""
    collector.wait_written()
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.6)
        answered = collector.answered_tracked()
        accepted = int(collector.metrics().get(("tracker_events_total", ""), 0))
        if answered == accepted == len_rows(collector) or time.monotonic() > deadline:
            return answered, accepted


def progress(runs):
    for r in runs:
        print(f"  {r['server']:9} w={r['workers']} {r['mode']:9} c={r['concurrency']:<4} "
              f"round {r['round']}: {r['rps']:9.0f} req/s  p99 {r['p99_ms']:7.2f} ms  "
              f"{r['cpu_us_per_req']:6.1f} us CPU/req", flush=True)


# ---- summary -------------------------------------------------------------------
FIELDS = ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us_per_req", "cpu_s_per_1m_events",
          "events_per_s")


def summarise(runs, args):
    cells = {}
    for r in runs:
        cells.setdefault((r["workers"], r["mode"], r["concurrency"]), {}).setdefault(
            r["server"], []).append(r)
    summary = []
    for (workers, mode, c), servers in sorted(cells.items()):
        row = {"workers": workers, "mode": mode, "concurrency": c}
        for name, rs in servers.items():
            med = {k: statistics.median(r[k] for r in rs) for k in FIELDS if k in rs[0]}
            rps = [r["rps"] for r in rs]
            med["rps_spread_pct"] = 100 * (max(rps) - min(rps)) / med["rps"] if med["rps"] else 0
            med["rounds"] = len(rs)
            row[name] = med
        col, ngx = row.get("collector"), row.get("nginx")
        if col:
            # CPU is read in clock ticks (10 ms): a short smoke run can measure 0.
            capacity = ratio(args.instance_vcpus * 1e6, col["cpu_us_per_req"])
            col["conns_per_s_per_dollar_cpu"] = ratio(capacity, args.price_usd)
            col["conns_per_s_per_dollar_measured"] = col["rps"] / args.price_usd
        if col and ngx:
            row["ratio_rps_to_nginx"] = ratio(col["rps"], ngx["rps"])
            row["ratio_cpu_per_req_to_nginx"] = ratio(col["cpu_us_per_req"], ngx["cpu_us_per_req"])
        summary.append(row)
    return summary


def ratio(a, b):
    return a / b if a is not None and b else None


def num(value, fmt):
    return "n/a" if value is None else format(value, fmt)


def headline(summary, args):
    want = args.headline_concurrency
    rows = []
    for workers in args.workers:
        for mode in args.modes:
            cands = [s for s in summary if s["workers"] == workers and s["mode"] == mode]
            if cands:
                rows.append(min(cands, key=lambda s: abs(s["concurrency"] - want)))
    return rows


def format_table(rows):
    out = ["| workers | connections | conc. | req/s | spread | p50 ms | p90 ms | p99 ms | events/s "
           "persisted | CPU s / 1M events | nginx req/s | × nginx req/s | × nginx CPU/req "
           "| conn/s per $/month (CPU) |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        c, n = s["collector"], s.get("nginx")
        out.append(
            f"| {s['workers']} | {'keep-alive' if s['mode'] == 'keepalive' else 'new per request'} "
            f"| {s['concurrency']} | {c['rps']:,.0f} | {c['rps_spread_pct']:.0f}% "
            f"| {c['p50_ms']:.2f} | {c['p90_ms']:.2f} "
            f"| {c['p99_ms']:.2f} | {c['events_per_s']:,.0f} | {c['cpu_s_per_1m_events']:.1f} "
            f"| {n['rps']:,.0f} | {num(s['ratio_rps_to_nginx'], '.2f')} | "
            f"{num(s['ratio_cpu_per_req_to_nginx'], '.2f')} "
            f"| {num(c['conns_per_s_per_dollar_cpu'], ',.0f')} |"
            if n else
            f"| {s['workers']} | {s['mode']} | {s['concurrency']} | {c['rps']:,.0f} "
            f"| {c['rps_spread_pct']:.0f}% "
            f"| {c['p50_ms']:.2f} | {c['p90_ms']:.2f} | {c['p99_ms']:.2f} "
            f"| {c['events_per_s']:,.0f} | {c['cpu_s_per_1m_events']:.1f} | - | - | - "
            f"| {num(c['conns_per_s_per_dollar_cpu'], ',.0f')} |")
    return "\n".join(out)


def chart(summary, args, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[loadtest]'): no chart"
    fig, axes = plt.subplots(len(args.modes), 2, figsize=(11, 4 * len(args.modes)), squeeze=False)
    for i, mode in enumerate(args.modes):
        for j, (key, label) in enumerate((("rps", "requests/s"), ("p99_ms", "p99 latency, ms"))):
            ax = axes[i][j]
            for workers in args.workers:
                for server, style in (("collector", "-o"), ("nginx", ":s")):
                    pts = [(s["concurrency"], s[server][key]) for s in summary
                           if s["workers"] == workers and s["mode"] == mode and server in s]
                    if pts:
                        xs, ys = zip(*pts)
                        ax.plot(xs, ys, style, label=f"{server}, {workers} worker(s)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(args.concurrency, [str(c) for c in args.concurrency])
            ax.set_xlabel("concurrent connections (wrk -c)")
            ax.set_ylabel(label)
            ax.set_title(f"{label} - {'keep-alive' if mode == 'keepalive' else 'new connection per request'}")
            ax.grid(True, alpha=0.3)
            if key == "p99_ms":
                ax.set_yscale("log")
            ax.legend(fontsize=8)
    fig.suptitle(f"tracker (mixed routes, SQLite) vs nginx (static GIF); medians of {args.rounds} "
                 f"rounds; server on cpu {args.server_cpus}, wrk on cpu {args.client_cpus}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


# ---- main ----------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(REPO, "config.json"),
                    help="collector config to start from (Notify is replaced by a temporary "
                         "SQLite store, the listen address by a free loopback port)")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--modes", default="keepalive,close", help="keepalive and/or close")
    ap.add_argument("--concurrency", default="16,64,256", help="wrk -c values")
    ap.add_argument("--headline-concurrency", type=int, default=64)
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tools", default="wrk,locust", help="wrk and/or locust")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS,
                    help="relative weights of tuplet, post, pixel, redirect, bad")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--locust-users", type=int, default=20)
    ap.add_argument("--locust-seconds", type=int, default=15)
    ap.add_argument("--no-nginx", action="store_true", help="skip the ceiling")
    ncpu = os.cpu_count() or 1
    ap.add_argument("--server-cpus", default="1" if ncpu > 1 else "",
                    help="taskset cpu list for the collector and nginx")
    ap.add_argument("--client-cpus", default="0" if ncpu > 1 else "",
                    help="taskset cpu list for wrk and locust")
    ap.add_argument("--price-usd", type=float, default=DEFAULT_PRICE_USD,
                    help="monthly price of one server")
    ap.add_argument("--price-source", default=DEFAULT_PRICE_SOURCE)
    ap.add_argument("--instance-vcpus", type=int, default=2, help="vCPUs of that server")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--name", default="latest", help="results file name (without extension)")
    ap.add_argument("--table", metavar="JSON",
                    help="only print the headline table (markdown) of an earlier run's JSON")
    ap.add_argument("--smoke", action="store_true",
                    help="a few seconds: 1 worker, c=8, 1 s runs, short locust; results go to "
                         "a temp dir unless --out is given")
    if ap.parse_known_args(argv)[0].smoke:      # smoke defaults; explicit options still win
        ap.set_defaults(workers="1", concurrency="8", duration=1, rounds=1, locust_users=5,
                        locust_seconds=3, headline_concurrency=8,
                        out=None)
    args = ap.parse_args(argv)
    if args.out is None:                        # smoke results stay out of the repo
        args.out = tempfile.mkdtemp(prefix="tracker-loadtest-smoke-")
    args.workers = [int(w) for w in args.workers.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.tools = set(args.tools.split(","))
    if set(args.modes) - {"keepalive", "close"} or args.tools - {"wrk", "locust"}:
        ap.error("--modes takes keepalive,close and --tools takes wrk,locust")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        with open(args.table) as fh:
            print(format_table(json.load(fh)["headline"]))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # clean up on SIGTERM too
    if "wrk" in args.tools and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian package: wrk)")
    use_nginx = not args.no_nginx and "wrk" in args.tools
    notes = []
    if use_nginx and not nginx_binary():
        if not args.smoke:
            raise SystemExit("nginx is not installed (Debian package: nginx); or pass --no-nginx")
        use_nginx = False
        notes.append("nginx is not installed: the ceiling was skipped (smoke mode)")
    with open(args.config) as fh:
        base_config = json.load(fh)
    pinning = (f"collector and nginx pinned to cpu(s) {args.server_cpus}, wrk and locust to "
               f"cpu(s) {args.client_cpus} with taskset" if pin(args.server_cpus) else
               "not pinned (one CPU or no taskset)")
    print(f"loadtest: workers {args.workers}, modes {args.modes}, concurrency {args.concurrency}, "
          f"{args.rounds} round(s) x {args.duration} s; {pinning}", flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    base_dir = tempfile.mkdtemp(prefix="tracker-loadtest-")
    runs, per_workers, problems = [], [], []
    try:
        for workers in args.workers:
            r, result, p = bench_workers(workers, base_config, args, base_dir, use_nginx)
            runs += r
            per_workers.append(result)
            problems += p
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    summary = summarise(runs, args)
    report = {
        "ok": not problems, "problems": problems, "notes": notes,
        "started_utc": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(), "pinning": pinning},
        "settings": {"workers": args.workers, "modes": args.modes,
                     "concurrency": args.concurrency, "duration_s": args.duration,
                     "rounds": args.rounds, "tools": sorted(args.tools), "weights": args.weights,
                     "wrk_threads": args.wrk_threads, "smoke": args.smoke,
                     "store": "embedded SQLite (temporary file)",
                     "durability": per_workers[0].get("durability") if per_workers else None},
        "price": {"usd_per_month": args.price_usd, "instance_vcpus": args.instance_vcpus,
                  "source": args.price_source,
                  "conns_per_s_per_dollar_cpu": "instance_vcpus / (server CPU s per request) / "
                                                "price: what a whole instance would answer if "
                                                "the server's CPU is the limit",
                  "conns_per_s_per_dollar_measured": "measured req/s on the pinned server "
                                                     "cpu(s) / price (load-generator bound)"},
        "summary": summary, "headline": headline(summary, args),
        "per_workers": per_workers, "runs": runs,
    }
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"{args.name}.json")
    png_path = os.path.join(args.out, f"{args.name}.png")
    if "wrk" in args.tools:
        note = chart(summary, args, png_path)
        if note:
            notes.append(note)
    with open(json_path, "w") as fh:
        json.dump(report, fh, indent=1)
    print(render(report, args, json_path, png_path))
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


def render(report, args, json_path, png_path):
    lines = [f"\nmedians of {args.rounds} round(s) x {args.duration} s at c="
             f"{args.headline_concurrency}; {report['machine']['pinning']}; load average "
             f"{report['machine']['loadavg_before'][0]:.1f} before, "
             f"{report['machine']['loadavg_after'][0]:.1f} after",
             format_table(report["headline"]) if report["headline"] else "(no wrk runs)"]
    spreads = [s[k]["rps_spread_pct"] for s in report["summary"] for k in ("collector", "nginx")
               if k in s]
    if spreads:
        lines.append(f"noise: req/s spread between rounds (max-min over median) "
                     f"{statistics.median(spreads):.0f}% median, {max(spreads):.0f}% worst")
    lines.append(f"price: USD {args.price_usd:g}/month for {args.instance_vcpus} vCPU - "
                 f"{args.price_source}")
    for w in report["per_workers"]:
        s = w["store"]
        lines.append(f"workers={w['workers']}: {s['rows']} rows stored = "
                     f"{s['collector_answered_2xx3xx']} tracked 2xx/3xx answered, "
                     f"{s['distinct_markers']} distinct markers, collector exit {s['collector_exit_code']}")
        if "locust" in w:
            lc, ck = w["locust"], w["locust_check"]
            lines.append(f"  locust {lc['users']} users {lc['seconds']} s: {lc['requests']} "
                         f"requests, {lc['rps']:.0f}/s, p50/p90/p99 {lc['p50_ms']:.0f}/"
                         f"{lc['p90_ms']:.0f}/{lc['p99_ms']:.0f} ms, {lc['failures']} failed; "
                         f"{ck['stored']} stored = {ck['answered_2xx3xx']} answered 2xx/3xx "
                         f"({ck['returning_with_cookie']} with the vid cookie kept, "
                         f"{ck['bad_requests_400']} bad requests answered 400)")
    lines += report["notes"] + [f"results: {json_path}" +
                                (f", {png_path}" if os.path.exists(png_path) else "")]
    lines.append("OK: every 2xx/3xx answer was stored exactly once" if report["ok"]
                 else "FAILED")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
