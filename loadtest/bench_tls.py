"""TLS benchmark: what HTTPS costs against plain HTTP, in one run.

Starts two collectors pinned to the same core — one plain (``"TLS": "off"``),
one with a local ECDSA P-256 certificate (the key type the ACME client
requests) — and drives ``/ping`` on each with ``wrk`` pinned to the other
core, in two ways: keep-alive connections, and a new connection for every
request (``Connection: close``), which for TLS means a full handshake per
request. Rounds are interleaved; it prints medians of requests/s, p50/p99
and server CPU per request, and the TLS/plain ratios.

With a new connection per request wrk does a full handshake per request as
well, on one client core, so that mode's requests/s is bounded by the client
about as much as by the server: its server CPU per request is the figure to
compare.

    python loadtest/bench_tls.py [--duration 10] [--rounds 3] [--connections 64]
"""
import datetime
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from loadtest.bench_http import Server, free_port, require_wrk, run_wrk, wrk_options  # noqa: E402

MODES = ("plain keep-alive", "tls keep-alive", "plain new-conn", "tls new-conn")


def self_signed(directory):
    """A throw-away certificate for 127.0.0.1; returns (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    paths = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(paths[0], "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return paths


class TlsServer(Server):
    """bench_http's Server with local TLS; ready once HTTPS answers."""

    def __init__(self, workers, directory):
        self.tls_port = free_port()
        cert, key = self_signed(directory)
        super().__init__(workers, directory, {
            "TLS": "local", "TLSCert": cert, "TLSKey": key,
            "ProxyPortTLS": f"127.0.0.1:{self.tls_port}"})

    def wait_ready(self, workers):
        ctx = ssl._create_unverified_context()     # a throw-away self-signed certificate
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.tls_port}/ping",
                                            timeout=1, context=ctx):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("TLS collector did not start")


def measure(server, url, args, new_connections):
    before = server.cpu()
    result = run_wrk(None, None, args.duration, args.connections, url=url,
                     headers=["Connection: close"] if new_connections else ())
    result["cpu_us_per_req"] = (server.cpu() - before) * 1e6 / max(1, result["requests"])
    return result


def main():
    ap = wrk_options(__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    require_wrk()
    directory = tempfile.mkdtemp(prefix="tracker-bench-tls-")
    os.mkdir(os.path.join(directory, "plain"))
    os.mkdir(os.path.join(directory, "tls"))
    plain = Server(args.workers, os.path.join(directory, "plain"))
    try:
        tls = TlsServer(args.workers, os.path.join(directory, "tls"))
    except BaseException:
        plain.stop()
        raise
    targets = {"plain": (plain, f"http://127.0.0.1:{plain.port}/ping"),
               "tls": (tls, f"https://127.0.0.1:{tls.tls_port}/ping")}
    runs = {mode: [] for mode in MODES}
    try:
        for _ in range(args.rounds):
            for mode in MODES:
                server, url = targets[mode.split()[0]]
                runs[mode].append(measure(server, url, args, mode.endswith("new-conn")))
    finally:
        codes = [plain.stop(), tls.stop()]
    report = summarise(runs, args, codes)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    shutil.rmtree(directory, ignore_errors=True)
    failed = any(r["non2xx"] or r["socket_errors"] for rs in runs.values() for r in rs)
    if failed or any(codes):
        raise SystemExit(f"FAILED: errors {report['errors']}, exit codes {codes}")


def summarise(runs, args, codes):
    med = {mode: {key: statistics.median(r[key] for r in rs)
                  for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
           for mode, rs in runs.items()}
    ratio = {kind: {"rps": med[f"tls {kind}"]["rps"] / med[f"plain {kind}"]["rps"],
                    "cpu": med[f"tls {kind}"]["cpu_us_per_req"] /
                    med[f"plain {kind}"]["cpu_us_per_req"]}
             for kind in ("keep-alive", "new-conn")}
    return {"config": {"duration_s": args.duration, "rounds": args.rounds,
                       "connections": args.connections, "workers": args.workers},
            "median": med, "ratio_tls_to_plain": ratio,
            "errors": {m: [(r["non2xx"], r["socket_errors"]) for r in rs]
                       for m, rs in runs.items()},
            "collector_exit_codes": codes}


def format_report(rep):
    cfg = rep["config"]
    lines = [f"wrk -t1 -c{cfg['connections']} GET /ping, {cfg['rounds']} rounds x "
             f"{cfg['duration_s']} s, {cfg['workers']} worker(s), ECDSA P-256; medians:",
             f"{'mode':18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}"]
    for mode in MODES:
        m = rep["median"][mode]
        lines.append(f"{mode:18} {m['rps']:10.0f} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} "
                     f"{m['cpu_us_per_req']:11.2f}")
    for kind, r in rep["ratio_tls_to_plain"].items():
        lines.append(f"tls/plain {kind}: throughput x{r['rps']:.2f}, "
                     f"server CPU per request x{r['cpu']:.2f}")
    lines.append(f"errors (non-2xx, socket): {rep['errors']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
