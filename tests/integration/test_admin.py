"""AdminListen (issue 26): each route on each port, over real sockets."""
import re
import time

import pytest

from conftest import free_port

pytestmark = pytest.mark.integration


def admin_get(c, port, path):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def pings_counted(exposition):
    found = re.search(rb'^tracker_requests_total\{route="ping",status="200"\} ([\d.]+)$',
                      exposition, re.M)
    return float(found.group(1)) if found else 0.0


def test_admin_port_serves_operator_routes_public_port_keeps_ping_and_ready(collector_factory):
    admin = free_port()
    c = collector_factory({"AdminListen": f"127.0.0.1:{admin}", "Debug": True}, workers=2)
    # public port: tracking, /ping and /ready; no /metrics, no /status
    assert c.get("/tr/v1/m/admin-test")[0] == 200
    assert c.get("/ready")[0] == 200
    assert c.get("/metrics")[0] == 404 and c.get("/status")[0] == 404
    # admin port: the operator's routes; no tracking
    for path in ("/ready", "/status", "/metrics"):
        assert admin_get(c, admin, path)[0] == 200, path
    assert admin_get(c, admin, "/tr/v1/m/not-here")[0] == 404
    assert admin_get(c, admin, "/img/v1/m/not-here")[0] == 404
    # the exposition is the node's: summed over both workers
    time.sleep(1.2)                  # every worker publishes its counts twice a second
    before = pings_counted(admin_get(c, admin, "/metrics")[1])
    answered_by = set()
    for _ in range(60):
        status, headers, _ = c.get("/ping", headers={"Connection": "close"})
        assert status == 200
        answered_by.add(headers["X-Tracker-Worker"])
    assert len(answered_by) == 2
    time.sleep(1.2)                  # every worker publishes its counts twice a second
    status, body = admin_get(c, admin, "/metrics")
    assert status == 200 and pings_counted(body) - before == 60
    assert admin_get(c, admin, "/ping")[0] == 200
    assert c.stop() == 0


def test_without_admin_listen_public_port_serves_all_and_supervisor_warns(collector):
    assert collector.get("/metrics")[0] == 200 and collector.get("/status")[0] == 200
    assert "AdminListen is not set" in collector.logs()


def test_admin_listen_on_a_public_address_is_refused(collector_factory):
    import subprocess
    from conftest import TRACKER
    c = collector_factory(start=False)
    c.config.update({"ProxyPort": f"127.0.0.1:{c.port}", "AdminListen": f"127.0.0.1:{c.port}"})
    c.write_config(c.config)
    done = subprocess.run([TRACKER, "check-config", "--config", c.config_path],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "AdminListen: got '127.0.0.1:%d', an address the public listeners use" % c.port \
        in done.stdout + done.stderr
