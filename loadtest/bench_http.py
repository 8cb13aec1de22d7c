"""HTTP benchmark: the tracked GET route against /ping, in one run.

Starts `tracker serve` (pinned to one core), drives it with `wrk` (pinned to
the other), and prints for each route: requests/s, p50/p99 latency, server
CPU per request (the worker processes' CPU time / requests answered) and how
it splits between the workers' threads (event loop, "spool" fsyncs, "sqlite"
store writes; engine/system/threads.py names them), and —
for the tracked route — events persisted per second (rows in the SQLite
store after the collector drained, divided by the run time). /ping is the
baseline: the same server doing no tracking work.

    python loadtest/bench_http.py [--duration 10] [--rounds 3] [--connections 64]

The machines are shared and noisy: each route runs --rounds times,
interleaved, and the medians are reported with the ratio to the baseline.
"""
import argparse
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

TRACK_PATH = ("/tr/v1/vid/3d0be300-cbd2-11e8-aa59-ffd128a54d91/ROCK/ON/lat/37.232332/"
              "lon/6.32233223/first/true/score/6/ref/andy")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tracker_command():
    found = shutil.which("tracker", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "engine.cli"]


def checkout_tracker(before):
    """The ``tracker`` of ``--before``'s checkout (an earlier version with its
    own .venv), checked at once rather than when its first run starts."""
    path = os.path.join(before, ".venv", "bin", "tracker")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"--before {before}: no {path} (the checkout needs its own .venv "
                         f"with the collector installed)")
    return path


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() > 1 else []


def checkout_round(checkout, script, *args):
    """One ``--round`` of ``script`` (a benchmark comparing checkouts) run by
    ``checkout``'s own interpreter, in it, on cpu 1: its last line of output,
    read as JSON."""
    python = os.path.join(checkout, ".venv", "bin", "python")
    out = subprocess.run(pin(1) + [python, os.path.abspath(script), "--round", *args],
                         cwd=checkout, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:
        return []


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime + stime
        except FileNotFoundError:
            pass
    return total / CLK_TCK


def thread_cpu(pids):
    """CPU seconds per thread name over the processes ``pids``: the event loop
    (the process's own name), and the named threads (engine/system/threads.py:
    "spool", "sqlite", ...). Threads that ended are not counted."""
    out = {}
    for (pid, tid), (name, seconds) in task_cpu(pids).items():
        name = "event loop" if tid == str(pid) else name
        out[name] = out.get(name, 0.0) + seconds
    return out


def task_cpu(pids):
    """{(pid, tid): (thread name, CPU seconds)} of the live threads of ``pids``."""
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                    name = fh.read().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            out[(pid, tid)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


class Server:
    def __init__(self, workers, directory, extra_config=None):
        self.dir = directory
        self.port = free_port()
        self.db = os.path.join(directory, "bench.db")
        config = {"TLS": "off", "LogLevel": "warning", "MaximumConnections": 0,
                  "Notify": [{"Service": "sqlite", "Path": self.db, "Critical": True}]}
        config.update(extra_config or {})
        self.config = os.path.join(directory, "config.json")
        with open(self.config, "w") as fh:
            json.dump(config, fh)
        cmd = pin(1) + tracker_command() + ["serve", "--config", self.config, "--workers",
                                            str(workers), "--listen", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(cmd, stderr=open(os.path.join(directory, "log"), "wb"))
        self.wait_ready(workers)

    def wait_ready(self, workers):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1):
                    if len(children(self.proc.pid)) >= workers:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("collector did not start")

    def wait_written(self, timeout=120):
        """Block until every accepted event is written, so the store's backlog
        from one run does not bill its CPU to the next."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
            accepted = re.search(r"^tracker_events_total ([\d.e+]+)$", text, re.M)
            written = re.search(r'^tracker_sink_events_written_total\{sink="sqlite"\} ([\d.e+]+)$',
                                text, re.M)
            done = float(written.group(1)) if written else 0.0
            if not accepted or done >= float(accepted.group(1)):
                return
            time.sleep(0.25)
        raise SystemExit("the store did not catch up within %d s: %s / %s" % (
            timeout, accepted and accepted.group(1), written and written.group(1)))

    def cpu(self):
        return cpu_seconds([self.proc.pid] + children(self.proc.pid))

    def thread_cpu(self):
        return thread_cpu(children(self.proc.pid))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def events(self):
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def parse_wrk(text):
    def latency(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"requests": requests, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
            "p50_ms": latency("50"), "p99_ms": latency("99"),
            "non2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else ""}


def run_wrk(port, path, duration, connections, headers=(), url=None):
    """One wrk run (one thread, pinned to cpu 0) against 127.0.0.1:``port``
    ``path``, or against ``url`` when given; ``headers``: extra header lines."""
    cmd = pin(0) + ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url or f"http://127.0.0.1:{port}{path}")
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def wrk_options(description, duration=10, connections=64):
    """An argument parser with the options every wrk benchmark takes
    (--duration, --rounds, --connections); callers add their own."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--duration", type=float, default=duration, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=connections)
    return ap


def require_wrk():
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian package: wrk)")


def measure(server, path, args):
    """One wrk run; CPU is counted until the store has written the run's events."""
    before, threads_before = server.cpu(), server.thread_cpu()
    result = run_wrk(server.port, path, args.duration, args.connections)
    server.wait_written()
    n = max(1, result["requests"])
    result["cpu_us_per_req"] = (server.cpu() - before) * 1e6 / n
    result["threads_us_per_req"] = {
        name: (seconds - threads_before.get(name, 0.0)) * 1e6 / n
        for name, seconds in server.thread_cpu().items()}
    return result


def main():
    ap = wrk_options(__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    require_wrk()
    directory = tempfile.mkdtemp(prefix="tracker-bench-")
    server = Server(args.workers, directory)
    runs = {"ping": [], "track": []}
    track_seconds = 0.0
    try:
        for _ in range(args.rounds):
            runs["ping"].append(measure(server, "/ping", args))
            started = time.monotonic()
            runs["track"].append(measure(server, TRACK_PATH, args))
            track_seconds += time.monotonic() - started
    finally:
        code = server.stop()
    persisted = server.events()
    answered = sum(r["requests"] - r["non2xx"] for r in runs["track"])
    report = summarise(runs, persisted, answered, track_seconds, code, args)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    # wrk stops counting at its deadline with up to one request per connection
    # in flight: those were answered by the server (and stored) but not counted.
    in_flight = args.connections * args.rounds
    if not answered <= persisted <= answered + in_flight or code != 0:
        raise SystemExit(f"FAILED: {answered} tracked requests answered, {persisted} stored, "
                         f"collector exit code {code}")


def summarise(runs, persisted, answered, track_seconds, code, args):
    med = {route: {key: statistics.median(r[key] for r in rs)
                   for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
           for route, rs in runs.items()}
    for route, rs in runs.items():
        names = sorted({name for r in rs for name in r["threads_us_per_req"]})
        med[route]["threads_us_per_req"] = {
            name: statistics.median(r["threads_us_per_req"].get(name, 0.0) for r in rs)
            for name in names}
    return {
        "config": {"duration_s": args.duration, "rounds": args.rounds,
                   "connections": args.connections, "workers": args.workers},
        "median": med,
        "ratio_track_to_ping_rps": med["track"]["rps"] / med["ping"]["rps"],
        "ratio_track_to_ping_cpu": med["track"]["cpu_us_per_req"] / med["ping"]["cpu_us_per_req"],
        "tracked_answered": answered,
        "events_persisted": persisted,
        "events_persisted_per_s": persisted / track_seconds,
        "errors": {route: [(r["non2xx"], r["socket_errors"]) for r in rs] for route, rs in runs.items()},
        "collector_exit_code": code,
    }


def format_report(rep):
    lines = [f"wrk -t1 -c{rep['config']['connections']}, {rep['config']['rounds']} rounds x "
             f"{rep['config']['duration_s']} s, {rep['config']['workers']} worker(s); medians:",
             f"{'route':8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}"]
    for route in ("ping", "track"):
        m = rep["median"][route]
        lines.append(f"{route:8} {m['rps']:10.0f} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} "
                     f"{m['cpu_us_per_req']:11.2f}")
    for route in ("ping", "track"):
        split = rep["median"][route]["threads_us_per_req"]
        lines.append(f"{route} CPU us/req by worker thread: " + ", ".join(
            f"{name} {us:.1f}" for name, us in sorted(split.items(), key=lambda kv: -kv[1])
            if us >= 0.05))
    lines += [f"track/ping: throughput x{rep['ratio_track_to_ping_rps']:.2f}, "
              f"server CPU per request x{rep['ratio_track_to_ping_cpu']:.2f}",
              f"events persisted: {rep['events_persisted']} of {rep['tracked_answered']} answered "
              f"({rep['events_persisted_per_s']:.0f}/s over the tracked runs)",
              f"errors (non-2xx, socket): {rep['errors']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
