"""Static files benchmark: a small cached file against /ping, and against nginx.

Starts `tracker serve` (pinned to one core, `StaticDirectory` set) and, when
nginx is installed, nginx serving the same 43-byte GIF from its own temp dir
(loadtest/run.py's `Nginx`, same core, same worker count); drives each with
`wrk` (pinned to the other core) and prints, per target: requests/s, p50/p99
latency and server CPU per request, with the ratios to /ping and to nginx.

    python loadtest/bench_static.py [--duration 5] [--rounds 3] [--connections 64]
    python loadtest/bench_static.py --smoke     # a few seconds: it works

Targets: `ping` (the collector's /ping: no tracking, no file), `img` (the
tracked pixel route: the same GIF from a constant, plus tracking), `static`
(/pub/v1/pixel.gif: tracked like every /pub request, answered from the
worker's in-memory cache after one stat of the file) and `nginx` (/pixel.gif).
static vs img is what serving a file adds to a tracked request.
Rounds are interleaved and medians quoted (the machines are shared and noisy).
Exit status 1 when any answer was not a 2xx or the file came back wrong.
"""
import json
import os
import shutil
import statistics
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_http  # noqa: E402  (Server, measure, run_wrk)
import run  # noqa: E402  (Nginx, nginx_binary)

from engine.http.responses import PIXEL_GIF  # noqa: E402

FILE = "pixel.gif"
PATHS = {"ping": "/ping", "img": "/img/v1/ename/bench", "static": "/pub/v1/" + FILE,
         "nginx": "/" + FILE}


def start_collector(directory, workers):
    www = os.path.join(directory, "www")
    os.makedirs(www)
    with open(os.path.join(www, FILE), "wb") as fh:
        fh.write(PIXEL_GIF)
    # An old mtime: a file written less than a second ago is not cached yet.
    os.utime(os.path.join(www, FILE), (1_600_000_000, 1_600_000_000))
    return bench_http.Server(workers, directory, {"StaticDirectory": www})


def check_body(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status == 200 and resp.read() == PIXEL_GIF


def measure_nginx(nginx, args):
    before = nginx.cpu()
    result = bench_http.run_wrk(nginx.port, PATHS["nginx"], args.duration, args.connections)
    result["cpu_us_per_req"] = (nginx.cpu() - before) * 1e6 / max(1, result["requests"])
    return result


def bench(args, directory):
    collector = start_collector(os.path.join(directory, "tracker"), args.workers)
    nginx = None
    try:
        if args.nginx:
            nginx = run.Nginx(args.workers, os.path.join(directory, "nginx"), "1")
        problems = [f"{name}: wrong answer" for name, server in
                    (("static", collector), ("nginx", nginx)) if server is not None and
                    not check_body(server.port, PATHS[name])]
        runs = {name: [] for name in PATHS if name != "nginx" or nginx}
        for _ in range(args.rounds):
            for name in runs:
                runs[name].append(measure_nginx(nginx, args) if name == "nginx" else
                                  bench_http.measure(collector, PATHS[name], args))
    finally:
        code = collector.stop()
        if nginx is not None:
            nginx.stop()
    if code != 0:
        problems.append(f"collector exit code {code}")
    return runs, problems


def summarise(runs, args):
    med = {name: {key: statistics.median(r[key] for r in rs)
                  for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
           for name, rs in runs.items()}
    ratios = {}
    for base in ("ping", "img", "nginx"):
        if base in med:
            ratios[f"static_to_{base}_rps"] = med["static"]["rps"] / med[base]["rps"]
            ratios[f"static_to_{base}_cpu"] = (med["static"]["cpu_us_per_req"] /
                                               med[base]["cpu_us_per_req"])
    errors = {name: [(r["non2xx"], r["socket_errors"]) for r in rs] for name, rs in runs.items()}
    return {"config": {"duration_s": args.duration, "rounds": args.rounds,
                       "connections": args.connections, "workers": args.workers,
                       "file_bytes": len(PIXEL_GIF)},
            "median": med, "ratios": ratios, "errors": errors}


def format_report(rep):
    cfg = rep["config"]
    lines = [f"wrk -t1 -c{cfg['connections']}, {cfg['rounds']} rounds x {cfg['duration_s']} s, "
             f"{cfg['workers']} worker(s), a {cfg['file_bytes']}-byte file; medians:",
             f"{'target':8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}"]
    for name, m in rep["median"].items():
        lines.append(f"{name:8} {m['rps']:10.0f} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} "
                     f"{m['cpu_us_per_req']:11.2f}")
    r = rep["ratios"]
    for base in ("ping", "img", "nginx"):
        if f"static_to_{base}_rps" in r:
            lines.append(f"static/{base}: throughput x{r[f'static_to_{base}_rps']:.2f}, "
                         f"server CPU per request x{r[f'static_to_{base}_cpu']:.2f}")
    lines.append(f"errors (non-2xx, socket): {rep['errors']}")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = bench_http.wrk_options(__doc__.splitlines()[0], duration=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-nginx", dest="nginx", action="store_false", help="skip nginx")
    ap.add_argument("--smoke", action="store_true", help="1 round of 1 s at c=16 (CI)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.rounds, args.connections = 1, 1, 16
    return args


def main(argv=None):
    args = parse_args(argv)
    bench_http.require_wrk()
    if args.nginx and not run.nginx_binary():
        print("nginx is not installed (Debian package: nginx): comparing with /ping only")
        args.nginx = False
    directory = tempfile.mkdtemp(prefix="tracker-bench-static-")
    os.chmod(directory, 0o755)      # nginx's workers (user nobody) must reach its files
    try:
        runs, problems = bench(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    report = summarise(runs, args)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    problems += [f"{name}: {bad} non-2xx answers" for name, rs in runs.items()
                 for bad in [sum(r["non2xx"] for r in rs)] if bad]
    if problems:
        raise SystemExit("FAILED: " + "; ".join(problems))


if __name__ == "__main__":
    main()
