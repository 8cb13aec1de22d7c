"""The cost rules (deploy/prometheus/tracker.rules.yml) in a real Prometheus
scraping a real collector under wrk load, checked against what this test
measures itself.

Prometheus (Debian's package) runs on loopback, scrapes the collector's
AdminListen address every second and evaluates the shipped rules every
second. The test reads the collector's CPU from /proc (the supervisor and
every child, user + system) just before and just after the load, and counts
the requests, events and connections it makes. The rules' 5-minute window
covers the whole life of the series here (well under 5 minutes): besides
the load it only holds a few idle seconds and the one-per-second scrapes,
which is why a 20 % margin is ample.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port, wait_for
from engine.system.cpus import usable_cpus
from prometheusserver import PrometheusServer, needs_prometheus

pytestmark = [pytest.mark.integration, needs_prometheus,
              pytest.mark.skipif(not shutil.which("wrk"),
                                 reason="wrk is not installed (Debian package wrk)")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(REPO, "deploy", "prometheus", "tracker.rules.yml")
DASHBOARD = os.path.join(REPO, "deploy", "prometheus", "tracker.dashboard.json")
TRACK = "/tr/v1/m/prometheus-load"
LOAD_SECONDS = 12
WRK_CONNECTIONS = 16
SHORT_CONNECTIONS = 200    # one request each, to give the connection rule something to count
MONTHLY_COST = 18
WINDOW = 300               # seconds: the rules' rate5m
MARGIN = 0.2


def own_cpu_seconds(pid):
    """utime + stime of one process from /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def collector_cpu(collector):
    """(CPU seconds of the supervisor and all its children, their pids)."""
    pids = [collector.proc.pid, *collector.child_pids()]
    return sum(own_cpu_seconds(p) for p in pids), pids


def run_wrk(url, seconds, connections):
    done = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
                          capture_output=True, text=True, timeout=seconds + 30, check=True)
    out = done.stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    return int(re.search(r"(\d+) requests in", out).group(1))


def short_connections(port, n):
    """``n`` connections with one request each (Connection: close)."""
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(4096):
                pass


def near(got, expected, what):
    assert expected > 0 and abs(got - expected) <= MARGIN * expected, \
        f"{what}: Prometheus {got:.6g}, measured {expected:.6g} ({got / expected - 1:+.1%})"
    print(f"{what}: Prometheus {got:.6g}, measured {expected:.6g} ({got / expected - 1:+.1%})")


def dashboard_queries():
    with open(DASHBOARD) as fh:
        dashboard = json.load(fh)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"].replace("$instance", ".*")


@pytest.fixture
def scraped(collector_factory, tmp_path):
    """A collector with AdminListen and ServerMonthlyCost, and a Prometheus
    scraping it that has seen its tracked route before the load starts."""
    admin = free_port()
    c = collector_factory({"AdminListen": f"127.0.0.1:{admin}", "ServerMonthlyCost": MONTHLY_COST})
    prom = PrometheusServer(str(tmp_path), [f"127.0.0.1:{admin}"], [RULES]).start()
    try:
        assert c.get(TRACK)[0] == 200     # the route's series exists before the load
        assert wait_for(lambda: prom.query(
            'count_over_time(tracker_requests_total{route="track"}[1m]) >= 3'), 20), prom.logs()
        yield c, prom
    finally:
        prom.stop()


def test_cost_rules_agree_with_what_the_test_measures(scraped):
    c, prom = scraped
    cpu_before, pids = collector_cpu(c)
    requests = run_wrk(f"http://127.0.0.1:{c.port}{TRACK}", LOAD_SECONDS, WRK_CONNECTIONS)
    short_connections(c.port, SHORT_CONNECTIONS)
    cpu_after, pids_after = collector_cpu(c)
    assert pids_after == pids, "a worker was replaced during the load"
    cpu = cpu_after - cpu_before
    events = requests + 1                         # the warm-up request too
    answered = requests + SHORT_CONNECTIONS + 1
    connections = WRK_CONNECTIONS + SHORT_CONNECTIONS + 1
    # Every worker has published and Prometheus scraped it, then evaluated the rules.
    assert wait_for(lambda: prom.query(f"sum(tracker_events_total) >= {events}"), 15), prom.logs()
    time.sleep(2.5)
    print(f"load: {requests} requests in {LOAD_SECONDS} s, collector CPU {cpu:.2f} s")

    per_cpu = answered / cpu
    near(prom.value("tracker:requests_per_cpu_second:rate5m"), per_cpu, "requests per CPU-second")
    near(prom.value("tracker:cpu_seconds_per_event:rate5m"), cpu / events, "CPU seconds per event")
    assert prom.value("tracker_cpus") == usable_cpus()
    near(prom.value("tracker:requests_per_second_per_monthly_dollar:rate5m"),
         per_cpu * usable_cpus() / MONTHLY_COST, "requests/s per monthly dollar")
    near(prom.value("tracker:connections_per_second:rate5m"), connections / WINDOW,
         "connections per second (5 min)")
    near(prom.value("tracker:cpu_seconds:rate5m"), cpu / WINDOW, "CPU seconds per second (5 min)")

    by_role = {labels["role"]: v for labels, v in prom.query("tracker_role:cpu_seconds:rate5m")}
    assert {"supervisor", "http", "store"} <= set(by_role), by_role
    assert by_role["http"] > by_role["supervisor"] > 0 and by_role["store"] > 0, by_role
    per_request = {labels["role"]: v for labels, v
                   in prom.query("tracker_role:cpu_seconds_per_request:rate5m")}
    near(sum(per_request.values()), 1 / per_cpu, "CPU seconds per request (sum of roles)")

    p50 = prom.value('tracker_route:request_duration_seconds:p50_rate5m{route="track"}')
    p99 = prom.value('tracker_route:request_duration_seconds:p99_rate5m{route="track"}')
    assert 0 < p50 <= p99 < 0.1, (p50, p99)


def test_rules_evaluate_and_the_dashboard_has_data(scraped):
    c, prom = scraped
    run_wrk(f"http://127.0.0.1:{c.port}{TRACK}", 2, 4)
    assert wait_for(lambda: prom.query("tracker:requests_per_cpu_second:rate5m"), 15)
    assert wait_for(lambda: prom.query("tracker_role:cpu_seconds_per_request:rate5m"), 15)
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    with open(RULES) as fh:
        shipped = re.findall(r"^\s+- (?:record|alert): (\S+)$", fh.read(), re.M)
    assert sorted(r["name"] for r in rules) == sorted(shipped)
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
    firing = [r["name"] for r in rules if r["type"] == "alerting" and r["state"] != "inactive"]
    assert not firing, firing
    assert prom.value("min(tracker_ready)") == 1
    empty = [(title, expr) for title, expr in dashboard_queries() if not prom.query(expr)]
    assert not empty, f"dashboard queries without data: {empty}"
