"""`tracker report` at scale (issue 20): every report kind over 1M events.

    python loadtest/bench_reports.py [--events 1000000] [--days 30] [--rounds 3]
        [--db FILE] [--smoke] [--json FILE]

The store is filled through the SQLite sink's own write path
(``SQLiteSink.write_batch_sync``: the lean layout, its indexes, first visits
and first referrals, counters) with loadtest/store_corpus.py's ``reports``
mix: visits with funnel steps (view, cart, checkout, buy with an outcome),
three A/B experiments, UTM campaigns and referral codes, a fifth of them the
vid of an earlier visitor (the referral loop), spread over ``--days`` days.
``--db`` keeps the file and reuses it when it already holds the events.

Then each kind runs as `tracker report` runs it (engine.reports.run on a
read-only connection, a new one per round), over the whole range; the
figures are the best and the median of ``--rounds`` rounds (wall clock),
the best CPU seconds of the process (what a report costs whatever the other
load on the machine), the rows returned, and the dashboard page (every kind, the funnel included, rendered
to HTML). Issue 20's target is under 2 s per report at 1M events; this
prints the figures and whether each is under it, it asserts nothing.
``--smoke`` (CI): 20,000 events, one round.

``--cassandra N``: the reports with Cassandra as the only store. A real
node (scripts/cassandra_node.py) is filled with the first N events of the
same mix through the Cassandra sink; `tracker report` then copies its
``events`` table into a temporary embedded store
(engine/reports/cassandra_copy.py) before it runs. Printed: the copy's
seconds and events/s, each report over the copy, and the same report over
the embedded store holding the same N events (the baseline, same run).

``--live SECONDS``: `tracker serve` (one HTTP worker) on the same store with
``DashboardToken``; a client sends tracked GETs one after another on a
keep-alive connection for SECONDS, first alone, then while another client
loads ``/dash/`` in a loop: the tracked requests' latency (p50, p99, max)
both ways shows what the dashboard's thread costs the worker's event loop.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine import _parse  # noqa: E402
from engine.reports import KINDS, open_store, page, run  # noqa: E402
from loadtest.store_corpus import fill_sqlite, reports as report_mix  # noqa: E402

STEPS = ["view", "cart", "checkout", "buy"]
TARGET_S = 2.0
BATCH = 5000
START_MS = 1_795_000_000_000


def fill(path, events, days, seed=20):
    """Write about ``events`` of the reports mix; (events, seconds)."""
    rate = events / (days * 86_400)         # events per second of created time
    t0 = time.monotonic()
    records = report_mix(events, random.Random(seed), _parse.TimeUUIDGen(), START_MS, rate)
    return fill_sqlite(path, records, BATCH), time.monotonic() - t0


def stored(path):
    if not os.path.exists(path):
        return 0
    conn = open_store(path)
    try:
        return conn.execute("SELECT count(*) FROM ev").fetchone()[0]
    finally:
        conn.close()


def time_kind(path, kind, rounds):
    """(best s, median s, best CPU s, rows)."""
    seconds, cpu, rows = [], [], 0
    for _ in range(rounds):
        conn = open_store(path)
        t0, c0 = time.monotonic(), time.process_time()
        report = run(kind, conn, 0, 1 << 62, steps=STEPS)
        seconds.append(time.monotonic() - t0)
        cpu.append(time.process_time() - c0)
        conn.close()
        rows = len(report.rows)
    return min(seconds), statistics.median(seconds), min(cpu), rows


def time_dashboard(path, rounds):
    seconds, cpu, size = [], [], 0
    for _ in range(rounds):
        conn = open_store(path)
        t0, c0 = time.monotonic(), time.process_time()
        reports = {kind: run(kind, conn, 0, 1 << 62, steps=STEPS) for kind in KINDS}
        html = page.page(reports, {"steps": ",".join(STEPS)}, "now")
        seconds.append(time.monotonic() - t0)
        cpu.append(time.process_time() - c0)
        conn.close()
        size = len(html)
    return min(seconds), statistics.median(seconds), min(cpu), size


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(path, directory, token):
    port = _free_port()
    config = os.path.join(directory, "config.json")
    with open(config, "w") as fh:
        json.dump({"TLS": "off", "LogLevel": "warning", "DashboardToken": token,
                   "SpoolDirectory": os.path.join(directory, "spool"),
                   "Notify": [{"Service": "sqlite", "Path": path}]}, fh)
    tracker = shutil.which("tracker", path=os.path.dirname(sys.executable)) or "tracker"
    proc = subprocess.Popen([tracker, "serve", "--config", config, "--workers", "1",
                             "--listen", f"127.0.0.1:{port}"],
                            stderr=open(os.path.join(directory, "log"), "wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"tracker serve did not start (see {directory}/log)")


def _tracked_latencies(port, seconds):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    found, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        conn.request("GET", "/tr/v1/ename/bench-live")
        conn.getresponse().read()
        found.append(time.monotonic() - t0)
    conn.close()
    return found


def _dashboard_loop(port, token, stop, served):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while not stop.is_set():
        conn.request("GET", "/dash/?steps=" + ",".join(STEPS),
                     headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        served.append(resp.status)
    conn.close()


def _quantiles(values):
    ms = sorted(v * 1000 for v in values)
    return ms[len(ms) // 2], ms[int(len(ms) * 0.99)], ms[-1], len(ms)


def live(path, seconds):
    token = "bench-dashboard-token"
    with tempfile.TemporaryDirectory(prefix="bench-reports-live-") as directory:
        proc, port = _serve(path, directory, token)
        try:
            alone = _tracked_latencies(port, seconds)
            stop, served = threading.Event(), []
            loader = threading.Thread(target=_dashboard_loop, args=(port, token, stop, served))
            loader.start()
            busy = _tracked_latencies(port, seconds)
            stop.set()
            loader.join()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(f"\ntracked GETs on the dashboard's worker ({seconds} s each; ms):")
    print(f"{'':<22}{'p50':>8}{'p99':>8}{'max':>8}{'requests':>10}")
    for name, values in (("alone", alone), ("while /dash/ renders", busy)):
        p50, p99, top, n = _quantiles(values)
        print(f"{name:<22}{p50:>8.2f}{p99:>8.2f}{top:>8.1f}{n:>10,}")
    print(f"dashboard pages served meanwhile: {len(served)} (statuses {sorted(set(served))})")


def cassandra_part(n, days, rounds):
    import asyncio
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "scripts"))
    import cassandra_node
    from engine.config import config_from_dict
    from engine.reports.cassandra_copy import copy_events
    from engine.store.sinks.cassandra import CassandraSink
    with tempfile.TemporaryDirectory(prefix="bench-reports-cassandra-") as tmp:
        node = cassandra_node.CassandraNode(os.path.join(tmp, "node"), heap="1g")
        node.start()
        try:
            entry = {"Service": "cassandra", "Hosts": [f"127.0.0.1:{node.native_port}"],
                     "Context": "bench_reports", "Timeout": 20000}
            cfg = config_from_dict({"TLS": "off", "SpoolDirectory": os.path.join(tmp, "spool"),
                                    "Notify": [entry]})
            events = [_parse.decode(r) for r in report_mix(
                n, random.Random(20), _parse.TimeUUIDGen(), START_MS, n / (days * 86_400))]
            t0 = time.monotonic()
            asyncio.run(_fill_cassandra(CassandraSink(cfg.notify[0], cfg), events))
            print(f"\ncassandra: {len(events):,} events written through the sink in "
                  f"{time.monotonic() - t0:.1f} s")
            copy = os.path.join(tmp, "copy.db")
            copied, seconds = copy_events(cfg.notify[0], cfg, copy)
            print(f"copy of its events table: {copied:,} events in {seconds:.2f} s "
                  f"({copied / seconds:,.0f} events/s)")
            embedded = os.path.join(tmp, "embedded.db")
            fill(embedded, n, days)
            print(f"\n{'report':<14}{'cassandra s':>12}{'embedded s':>12}   (median of "
                  f"{rounds}; cassandra = the copy's {seconds:.2f} s + the report on it)")
            for kind in KINDS:
                on_copy = time_kind(copy, kind, rounds)[1]
                on_embedded = time_kind(embedded, kind, rounds)[1]
                print(f"{kind:<14}{seconds + on_copy:>12.3f}{on_embedded:>12.3f}")
        finally:
            node.stop()


async def _fill_cassandra(sink, events):
    await sink.apply_schema()
    await sink.start()
    try:
        for i in range(0, len(events), BATCH):
            await sink.write_batch(events[i:i + BATCH])
    finally:
        await sink.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", help="keep the store here (reused if it has the events)")
    parser.add_argument("--smoke", action="store_true", help="20,000 events, one round (CI)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--live", type=float, metavar="SECONDS",
                        help="then tracked-request latency with and without /dash/ loading")
    parser.add_argument("--cassandra", type=int, metavar="N",
                        help="then the reports from a Cassandra node holding N events")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.rounds = 20_000, 1
    tmp = None
    path = args.db
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-reports-")
        path = os.path.join(tmp.name, "reports.db")
    have = stored(path)
    if have >= args.events * 0.99:
        print(f"store: {path}, {have:,} events (reused)")
        fill_s = None
    else:
        if have:
            sys.exit(f"{path} holds {have:,} events, not {args.events:,}: use another --db")
        have, fill_s = fill(path, args.events, args.days)
        print(f"store: {path}, {have:,} events written through the SQLite sink in "
              f"{fill_s:.1f} s ({have / fill_s:,.0f} events/s)")
    size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    print(f"file: {size / 1e6:.0f} MB; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs (shared machines make these slower, never faster)")
    print(f"\n{'report':<14}{'best s':>9}{'median s':>10}{'CPU s':>8}{'rows':>7}"
          f"   under {TARGET_S:.0f} s (best)")
    figures = {"events": have, "fill_seconds": fill_s, "file_bytes": size, "reports": {}}
    for kind in KINDS:
        best, median, cpu, rows = time_kind(path, kind, args.rounds)
        figures["reports"][kind] = {"best_s": best, "median_s": median, "cpu_s": cpu,
                                    "rows": rows}
        print(f"{kind:<14}{best:>9.3f}{median:>10.3f}{cpu:>8.3f}{rows:>7}   "
              f"{'yes' if best < TARGET_S else 'NO'}")
    best, median, cpu, html = time_dashboard(path, args.rounds)
    figures["reports"]["dashboard page"] = {"best_s": best, "median_s": median, "cpu_s": cpu,
                                            "bytes": html}
    print(f"{'dashboard':<14}{best:>9.3f}{median:>10.3f}{cpu:>8.3f}{'':>7}   (every kind + "
          f"HTML, {html / 1000:.0f} kB)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    if args.live:
        live(path, args.live)
    if tmp is not None:
        tmp.cleanup()
    if args.cassandra:
        cassandra_part(args.cassandra, args.days, args.rounds)


if __name__ == "__main__":
    main()
