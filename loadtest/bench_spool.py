"""What durability costs, and how fast a spool drains.

1. wrk against the tuplet route of two collectors started side by side in
   the same run — ``"Durability": "memory"`` and ``"spool"`` (answer after
   the group's fdatasync) — interleaved rounds, medians and ratios.
2. Drain: a spool file of N events written offline (as a worker killed with
   SIGKILL would leave it), then a collector started on that directory; the
   time until every event is in the SQLite store, and events/s.

    python loadtest/bench_spool.py [--duration 5] [--rounds 3] [--drain-events 100000]
"""
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_http import (TRACK_PATH, Server, free_port, measure, require_wrk,  # noqa: E402
                        tracker_command, wrk_options)


def durability_comparison(args):
    base = tempfile.mkdtemp(prefix="tracker-bench-spool-")
    servers, runs = {}, {"memory": [], "spool": []}
    try:
        for mode in runs:
            os.makedirs(os.path.join(base, mode))
            servers[mode] = Server(1, os.path.join(base, mode), {"Durability": mode})
        for _ in range(args.rounds):
            for mode in runs:
                runs[mode].append(measure(servers[mode], TRACK_PATH, args))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms",
                                                                 "cpu_us_per_req")}
           for m, rs in runs.items()}
    print(f"tuplet route, wrk -t1 -c{args.connections}, {args.rounds} x {args.duration} s, "
          "1 worker, medians:")
    for mode in runs:
        m = med[mode]
        print(f"  {mode:6}  {m['rps']:9.0f} req/s  p50 {m['p50_ms']:6.3f} ms  "
              f"p99 {m['p99_ms']:7.3f} ms  {m['cpu_us_per_req']:6.2f} us CPU/req")
    print(f"  spool/memory: throughput x{med['spool']['rps'] / med['memory']['rps']:.3f}, "
          f"p99 x{med['spool']['p99_ms'] / med['memory']['p99_ms']:.2f}")
    return med


def write_orphan_spool(directory, count):
    """A spool file of ``count`` events with no owner, as a crash leaves it."""
    from engine import _parse
    from engine.spool import SpoolWriter
    ids = _parse.TimeUUIDGen()
    writer = SpoolWriter(directory, 1 << 40)
    now = int(time.time() * 1000)
    for i in range(count):
        writer.append(_parse.encode_track(TRACK_PATH.encode() + b"/m/%d" % i, None, None,
                                          "127.0.0.1", b"bench", None, None, now + i, ids))
        if i % 5000 == 4999 or i == count - 1:
            _, data, _records = writer.take_group()
            writer.write_group(data)
    writer.close()


def drain(args):
    base = tempfile.mkdtemp(prefix="tracker-bench-drain-")
    spool_dir = os.path.join(base, "spool")
    write_orphan_spool(spool_dir, args.drain_events)
    size = sum(os.path.getsize(os.path.join(spool_dir, n)) for n in os.listdir(spool_dir))
    db = os.path.join(base, "drain.db")
    config = os.path.join(base, "config.json")
    with open(config, "w") as fh:
        json.dump({"TLS": "off", "LogLevel": "warning", "SpoolDirectory": spool_dir,
                   "Notify": [{"Service": "sqlite", "Path": db}]}, fh)
    started = time.monotonic()
    proc = subprocess.Popen(tracker_command() + ["serve", "--config", config, "--workers", "1",
                                                 "--listen", f"127.0.0.1:{free_port()}"],
                            stderr=subprocess.DEVNULL)
    count, deadline = 0, time.monotonic() + 600
    try:
        while count < args.drain_events and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                with sqlite3.connect(db) as conn:
                    count = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        elapsed = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(60)
    shutil.rmtree(base, ignore_errors=True)
    print(f"drain: {args.drain_events} spooled events ({size / 1e6:.1f} MB) into SQLite in "
          f"{elapsed:.1f} s from process start = {count / elapsed:.0f} events/s "
          f"({count} stored)")
    if count != args.drain_events:
        raise SystemExit("FAILED: the spool did not drain completely")


def main():
    ap = wrk_options(__doc__.splitlines()[0], duration=5)
    ap.add_argument("--drain-events", type=int, default=100000)
    args = ap.parse_args()
    require_wrk()
    durability_comparison(args)
    drain(args)


if __name__ == "__main__":
    main()
