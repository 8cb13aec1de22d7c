"""Container health probe: GET a service route of the collector in this container.

    python healthcheck.py /ready     # Dockerfile HEALTHCHECK (readiness)
    python healthcheck.py /ping      # Swarm stack (liveness, see docs/docker.md)

The address comes from the same config the collector reads ($TRACKER_CONFIG),
so a mounted config with another port or TLS needs no second setting. Exit 0
on a 200 answer, 1 otherwise (what HEALTHCHECK expects).
"""
import http.client
import os
import ssl
import sys

from engine.config import load_config
from engine.supervisor import Supervisor

TIMEOUT = 2.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def probe(path):
    config = load_config(os.environ.get("TRACKER_CONFIG", "config.json"))
    host, port = Supervisor.listen_address(config)
    host = WILDCARDS.get(host, host)
    if config.tls == "local":
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
