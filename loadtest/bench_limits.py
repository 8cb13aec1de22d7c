"""What the node-wide limiter and the metrics cost per request.

1. wrk against the tuplet route of two collectors started side by side in
   the same run — one with no rate limit, one with per-IP and global limits
   set so high they are never reached (every request still takes tokens from
   the shared buckets) — interleaved rounds, medians and ratio.
2. In-process micro-costs (µs per call): the shared bucket's ``allow``, the
   worker's per-request metric bookkeeping (``WorkerStats.answered``), and, for comparison, a direct prometheus_client labelled
   ``inc`` (what the worker avoids on the request path).

    python loadtest/bench_limits.py [--duration 5] [--rounds 3]
"""
import os
import shutil
import statistics
import sys
import tempfile
import timeit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_http import TRACK_PATH, Server, measure, require_wrk, wrk_options  # noqa: E402

NEVER_REACHED = {"RateLimit": {"PerIPRate": 1e9, "PerIPBurst": 1e9,
                               "GlobalRate": 1e9, "GlobalBurst": 1e9}}


def http_comparison(args):
    base = tempfile.mkdtemp(prefix="tracker-bench-limits-")
    servers = {}
    try:
        for name, extra in (("off", {}), ("on", NEVER_REACHED)):
            os.makedirs(os.path.join(base, name))
            servers[name] = Server(1, os.path.join(base, name), extra)
        runs = {"off": [], "on": []}
        for _ in range(args.rounds):
            for name in ("off", "on"):
                runs[name].append(measure(servers[name], TRACK_PATH, args))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p99_ms", "cpu_us_per_req")}
           for n, rs in runs.items()}
    print(f"tuplet route, wrk -t1 -c{args.connections}, {args.rounds} x {args.duration} s, medians:")
    for name in ("off", "on"):
        m = med[name]
        print(f"  limiter {name:3}  {m['rps']:9.0f} req/s  p99 {m['p99_ms']:7.3f} ms  "
              f"{m['cpu_us_per_req']:6.2f} us CPU/req (incl. SQLite writes)")
    print(f"  on/off: throughput x{med['on']['rps'] / med['off']['rps']:.3f}, "
          f"CPU per request x{med['on']['cpu_us_per_req'] / med['off']['cpu_us_per_req']:.3f}")


def micro_costs():
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tracker-prom-"))
    from engine.limits._bucket import SharedLimits
    from engine.metrics import WorkerStats
    from prometheus_client import Counter
    limits = SharedLimits.create(65536)
    stats = WorkerStats()
    direct = Counter("bench_requests_total", "bench", ["route", "status"])
    n = 200000

    def per_call(stmt):
        return min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e6
    allow = limits.allow
    empty = per_call(lambda: None)
    print("per-request micro-costs (us, minus an empty call):")
    print(f"  shared bucket allow (IP + global)   "
          f"{per_call(lambda: allow(0, '198.51.100.7', 1e9, 1e9, 1e9, 1e9)) - empty:6.3f}")
    print(f"  WorkerStats.answered (count+latency)"
          f"{per_call(lambda: stats.answered('track', 200, 0.00002)) - empty:6.3f}")
    print(f"  prometheus Counter.labels().inc()   "
          f"{per_call(lambda: direct.labels('track', '200').inc()) - empty:6.3f}")


def main():
    args = wrk_options(__doc__.splitlines()[0], duration=5).parse_args()
    micro_costs()
    require_wrk()
    http_comparison(args)


if __name__ == "__main__":
    main()
