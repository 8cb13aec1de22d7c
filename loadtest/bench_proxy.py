"""Reverse-proxy benchmark: the collector as a proxy, against the same upstream
direct and behind nginx as a reverse proxy, in one run.

The upstream is nginx answering a small fixed body (``return 200``), one
worker. In interleaved rounds, wrk (keep-alive) drives:

  * ``direct``:  the upstream itself (the ceiling of this machine's loopback);
  * ``tracker``: `tracker serve` with ``ProxyUrl`` = the upstream (each request
    is also tracked: an event written to a temporary SQLite store);
  * ``nginx``:   nginx with ``proxy_pass`` to the upstream and an upstream
    keep-alive pool, the usual production setup;
  * ``tracker /ping`` and ``tracker /tr``: the same collector process on its
    own routes (HTTP alone; HTTP + tracking), to split what a proxied request
    costs into HTTP, tracking and proxying.

Requests carry a ``vid`` cookie, as a returning browser's do.

Both proxies get the same worker count and the same core (CPU 1);
wrk and the upstream share the other core. It prints requests/s, p50/p99
latency and the proxy's CPU microseconds per request (its whole process tree,
from /proc), medians over --rounds, and the ratios tracker/nginx and
tracker/direct. The CPU per request is the figure to trust on a shared
machine; requests/s move with whatever else runs.

    python loadtest/bench_proxy.py                      # about a minute
    python loadtest/bench_proxy.py --duration 1 --rounds 1   # smoke
"""
import json
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_http  # noqa: E402  (Server, parse_wrk, free_port, cpu_seconds)
import run  # noqa: E402  (Nginx, nginx_binary)

BODY = "proxied fine\n"
PATH = "/api/v1/things?id=42"
# A returning visitor (browsers keep the vid cookie): no first-visit rows per request.
COOKIE = "Cookie: vid=3d0be300-cbd2-11e8-aa59-ffd128a54d91"
# The collector's own routes on the same process, to split its cost per request:
# HTTP alone (/ping), HTTP + tracking (a tuplet GET), HTTP + tracking + proxying.
BASELINES = {"tracker /ping": "/ping",
             "tracker /tr": "/tr/v1/vid/3d0be300-cbd2-11e8-aa59-ffd128a54d91/url/x"}


def start_upstream(directory):
    return run.Nginx(1, os.path.join(directory, "upstream"), "0",
                     locations=f'location / {{ return 200 "{BODY}"; }}')


def start_nginx_proxy(directory, upstream_port, workers, cpu):
    pool = (f"upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}")
    location = ("location / { proxy_pass http://backend; proxy_http_version 1.1; "
                'proxy_set_header Connection ""; '
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
                "proxy_set_header X-Forwarded-Host $host; "
                "proxy_set_header X-Forwarded-Proto $scheme; }")
    return run.Nginx(workers, os.path.join(directory, "proxy"), cpu, locations=location,
                     http_extra="  " + pool)


def start_tracker_proxy(directory, upstream_port, workers):
    """`tracker serve` proxying to the upstream (bench_http.Server pins it to CPU 1)."""
    os.makedirs(directory)
    return bench_http.Server(workers, directory,
                             {"ProxyUrl": f"http://127.0.0.1:{upstream_port}",
                              "SpoolDirectory": os.path.join(directory, "spool")})


def measure(name, server, args):
    before = server.cpu()
    result = bench_http.run_wrk(server.port, BASELINES.get(name, PATH), args.duration,
                                args.connections, headers=[COOKIE])
    if name.startswith("tracker"):
        server.wait_written()
    if name != "direct":
        result["cpu_us_per_req"] = (server.cpu() - before) * 1e6 / max(1, result["requests"])
    if result["non2xx"]:
        raise SystemExit(f"FAILED: {name} answered {result['non2xx']} non-2xx responses")
    return result


def main():
    ap = bench_http.wrk_options(__doc__.splitlines()[0], duration=5, connections=32)
    ap.add_argument("--workers", type=int, default=1, help="proxy workers (both proxies)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    for tool in ("wrk",):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (Debian package: {tool})")
    if not run.nginx_binary():
        raise SystemExit("nginx is not installed (Debian package: nginx)")
    directory = tempfile.mkdtemp(prefix="tracker-bench-proxy-")
    os.chmod(directory, 0o755)
    servers = {}
    try:
        upstream = servers["direct"] = start_upstream(directory)
        servers["tracker"] = start_tracker_proxy(os.path.join(directory, "tracker"),
                                                 upstream.port, args.workers)
        servers["nginx"] = start_nginx_proxy(directory, upstream.port, args.workers, "1")
        targets = dict(servers, **{name: servers["tracker"] for name in BASELINES})
        runs = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, server in targets.items():
                runs[name].append(measure(name, server, args))
    finally:
        codes = {name: server.stop() for name, server in reversed(list(servers.items()))}
    report = summarise(runs, args)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    if codes.get("tracker") != 0:
        raise SystemExit(f"FAILED: the collector exited {codes.get('tracker')}")


def summarise(runs, args):
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys if k in rs[0]}
           for name, rs in runs.items()}
    t, n, d = med["tracker"], med["nginx"], med["direct"]
    return {"config": {"duration_s": args.duration, "rounds": args.rounds,
                       "connections": args.connections, "proxy_workers": args.workers},
            "median": med,
            "ratios": {"tracker_vs_nginx_rps": t["rps"] / n["rps"],
                       "tracker_vs_direct_rps": t["rps"] / d["rps"],
                       "tracker_vs_nginx_cpu_per_req": t["cpu_us_per_req"] / n["cpu_us_per_req"]},
            "runs": runs}


def format_report(report):
    lines = [f"{'':14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU us/req':>18}"]
    for name, m in report["median"].items():
        cpu = f"{m['cpu_us_per_req']:18.1f}" if "cpu_us_per_req" in m else f"{'-':>18}"
        lines.append(f"{name:14} {m['rps']:9.0f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} {cpu}")
    r = report["ratios"]
    lines.append(f"tracker/nginx: {r['tracker_vs_nginx_rps']:.2f}x req/s, "
                 f"{r['tracker_vs_nginx_cpu_per_req']:.2f}x CPU per request; "
                 f"tracker/direct: {r['tracker_vs_direct_rps']:.2f}x req/s "
                 f"(medians of {report['config']['rounds']} rounds)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
