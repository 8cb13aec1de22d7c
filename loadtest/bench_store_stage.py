"""Storage stage benchmark: 1 HTTP worker vs 2 HTTP workers, one store process, one core.

Issue 16's check: with the sinks moved out of the HTTP workers into a store
process, a second HTTP worker on the same core no longer costs throughput
(wave 1: 2 workers on one core did 7,687 req/s against 10,192 for 1, each
worker running its own SQLite writer). Both servers run SQLite with
``StoreWorkers: 1``; every process of each server is pinned to core 1, wrk
to core 0. Rounds interleave the two servers (the machine is shared and
noisy) and the medians are reported:

- req/s answered (wrk) and p50/p99;
- events/s stored: rows written to SQLite for the run, divided by the time
  from the run's start until the store had written them all (so a store that
  falls behind shows here, not in req/s);
- server CPU per request, and the store process's share of it;
- the same for ``/ping`` (no event, no spool, no store): what two event loops
  sharing one core cost by themselves, whatever the storage does.

    python loadtest/bench_store_stage.py [--duration 10] [--rounds 3] [--connections 64]
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_http import (TRACK_PATH, Server, children, cpu_seconds, require_wrk,  # noqa: E402
                        run_wrk, wrk_options)


def title(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[0].decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def store_pids(server):
    return [p for p in children(server.proc.pid) if title(p).startswith("tracker: store-")]


def ping_run(server, args):
    before = server.cpu()
    result = run_wrk(server.port, "/ping", args.duration, args.connections)
    result["cpu_us_per_req"] = (server.cpu() - before) * 1e6 / max(1, result["requests"])
    return result


def one_run(server, args):
    before_cpu, before_store = server.cpu(), cpu_seconds(store_pids(server))
    before_events = server.events()
    started = time.monotonic()
    result = run_wrk(server.port, TRACK_PATH, args.duration, args.connections)
    server.wait_written()
    elapsed = time.monotonic() - started
    n = max(1, result["requests"])
    result["events_per_s"] = (server.events() - before_events) / elapsed
    result["cpu_us_per_req"] = (server.cpu() - before_cpu) * 1e6 / n
    result["store_us_per_req"] = (cpu_seconds(store_pids(server)) - before_store) * 1e6 / n
    return result


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = wrk_options(__doc__.splitlines()[0])
    args = ap.parse_args()
    require_wrk()
    dirs = {n: tempfile.mkdtemp(prefix=f"tracker-bench-store-{n}-") for n in (1, 2)}
    servers = {n: Server(n, dirs[n], {"StoreWorkers": 1}) for n in (1, 2)}
    runs, pings = {1: [], 2: []}, {1: [], 2: []}
    try:
        for n in (1, 2):                     # warm-up: first connections, page cache
            run_wrk(servers[n].port, TRACK_PATH, 2, args.connections)
            servers[n].wait_written()
        for _ in range(args.rounds):
            for n in (1, 2):
                runs[n].append(one_run(servers[n], args))
                pings[n].append(ping_run(servers[n], args))
    finally:
        codes = {n: s.stop() for n, s in servers.items()}
    print(f"tracked GET, SQLite, StoreWorkers 1, all server processes on one core; "
          f"wrk -t1 -c{args.connections}, {args.duration:.0f} s x {args.rounds} rounds "
          f"(medians)")
    print(f"{'HTTP workers':>12} {'req/s':>9} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>10} {'store us/req':>12}")
    for n in (1, 2):
        r = runs[n]
        print(f"{n:>12} {median(r, 'rps'):>9.0f} {median(r, 'events_per_s'):>9.0f} "
              f"{median(r, 'p50_ms'):>7.2f} {median(r, 'p99_ms'):>7.2f} "
              f"{median(r, 'cpu_us_per_req'):>10.1f} {median(r, 'store_us_per_req'):>12.1f}")
    for n in (1, 2):
        print(f"{n:>12} {median(pings[n], 'rps'):>9.0f} {'(/ping)':>9} "
              f"{median(pings[n], 'p50_ms'):>7.2f} {median(pings[n], 'p99_ms'):>7.2f} "
              f"{median(pings[n], 'cpu_us_per_req'):>10.1f}")
    ratio = median(runs[2], "rps") / median(runs[1], "rps")
    cpu = median(runs[2], "cpu_us_per_req") / median(runs[1], "cpu_us_per_req")
    ping = median(pings[2], "rps") / median(pings[1], "rps")
    print(f"2 HTTP workers / 1 HTTP worker: tracked req/s x{ratio:.2f}, CPU per tracked "
          f"request x{cpu:.2f}; /ping req/s x{ping:.2f}")
    for n, d in dirs.items():
        shutil.rmtree(d, ignore_errors=True)
    bad = {n: c for n, c in codes.items() if c != 0}
    failed = {n: sum(r["non2xx"] for r in runs[n] + pings[n]) for n in (1, 2)}
    if bad or any(failed.values()):
        raise SystemExit(f"FAILED: exit codes {codes}, non-2xx answers {failed}")


if __name__ == "__main__":
    main()
