"""Container health probe: GET a service route of the collector in this container.

    python healthcheck.py /ready     # Dockerfile HEALTHCHECK (readiness)
    python healthcheck.py /ping      # Swarm stack (liveness, see docs/docker.md)

The address is the one the collector in this container listens on: its
`tracker serve` command line (read from /proc, so `--listen` and `--config`
given to `docker run` count) applied to its config, exactly as the supervisor
does. A mounted config with another port or TLS needs no second setting.
Exit 0 on a 200 answer, 1 otherwise (what HEALTHCHECK expects).
"""
import http.client
import os
import shlex
import ssl
import sys

from engine.cli import build_parser, overrides_from
from engine.config import load_config
from engine.supervisor import Supervisor

TIMEOUT = 2.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


SUPERVISOR_TITLE = "tracker: supervisor "


def serve_arguments():
    """`tracker serve ...` as the collector was started: PID 1 in the container
    (the entrypoint execs it), else any process running `serve`."""
    for pid in ["1"] + sorted(p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = arguments_of(fh.read())
        except OSError:
            continue
        if argv is not None:
            return argv
    return ["serve"]


def arguments_of(cmdline):
    """The `serve ...` arguments in a /proc/PID/cmdline, or None. The
    supervisor's process title (engine/supervisor.py) keeps them:
    ``tracker: supervisor serve --config ...``; before it is set the
    command line is the plain ``.../tracker serve ...``."""
    argv = cmdline.decode("utf-8", "replace").rstrip("\0").split("\0")
    if argv and argv[0].startswith(SUPERVISOR_TITLE):
        argv = shlex.split(argv[0][len(SUPERVISOR_TITLE):].strip())
        return argv[argv.index("serve"):] if "serve" in argv else None
    if "serve" in argv and any(a.endswith("tracker") for a in argv):
        return argv[argv.index("serve"):]
    return None


def target(serve_argv):
    """(tls, host, port) the collector started with ``serve_argv`` listens on:
    its admin listener when ``AdminListen`` is set (plain HTTP)."""
    args = build_parser().parse_args([a for a in serve_argv if a])
    config = load_config(args.config, overrides_from(args))
    if config.admin_address:
        host, port = config.admin_address
        return False, WILDCARDS.get(host, host), port
    # With TLS on, the plain port only redirects (and answers ACME
    # challenges): probe the TLS listener, the last one.
    host, port = Supervisor.listen_addresses(config)[-1]
    return config.tls != "off", WILDCARDS.get(host, host), port


def probe(path):
    tls, host, port = target(serve_arguments())
    if tls:
        # A local probe of our own listener: the certificate names the public
        # host, not 127.0.0.1, so it is not verified here.
        context = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(200)
    finally:
        conn.close()


def main(argv):
    path = argv[1] if len(argv) > 1 else "/ready"
    try:
        status, body = probe(path)
    except Exception as exc:  # any failure to get an answer means unhealthy
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {status} {body.decode('utf-8', 'replace').strip()}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
