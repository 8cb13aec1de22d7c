"""The cost metrics of a real collector, against /proc and the test's own
counts: CPU per role (also across a killed and respawned worker), accepted
connections, tracker_cpus and ServerMonthlyCost (also after a reload)."""
import os
import signal
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from engine.system.cpus import usable_cpus

pytestmark = pytest.mark.integration


def own_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(c):
    """{(name, role or None): value} from /metrics."""
    status, _, body = c.get("/metrics")
    assert status == 200
    return {(s.name, s.labels.get("role")): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def cpu_of(c, kind):
    return sum(own_cpu_seconds(p) for p in c.pids_of(kind))


def test_cpu_per_role_matches_proc_and_keeps_a_killed_workers_share(collector_factory):
    c = collector_factory(workers=2)
    for i in range(20 * 300):                      # some CPU in the HTTP workers: enough
        c.get(f"/tr/v1/m/cpu-{i}")                 # for the busier one to be over 0.1 s
        if i % 300 == 299 and max(map(own_cpu_seconds, c.worker_pids())) > 0.1:
            break
    victim, survivor = sorted(c.worker_pids(), key=own_cpu_seconds, reverse=True)
    before_kill = own_cpu_seconds(victim)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: c.replaced("http", [victim], 2), 15)
    readings = []

    def caught_up():
        """The counter has reached the live workers' CPU plus the killed one's:
        the supervisor reads every 0.5 s, and the respawned worker may still be
        booting on a busy machine, so wait until a reading covers it. Each try
        first lets the supervisor read again (at most about 1 s apart), so its
        figure includes what the previous scrape cost."""
        time.sleep(1.1)
        live_before = cpu_of(c, "http")
        got = scrape(c)                            # answering it costs a worker a little CPU
        live_after = cpu_of(c, "http")
        readings.append((got, got[("tracker_process_cpu_seconds_total", "http")],
                         live_before, live_after))
        return readings[-1][1] >= before_kill + live_before - 0.03

    # The killed worker's CPU stays in: at least what /proc showed before the kill
    # (the idle moment between that reading and SIGKILL adds next to nothing).
    # Without it the counter would stay about before_kill short, and this times out.
    assert before_kill > 0.05
    assert wait_for(caught_up, 15), (before_kill, readings[-1][1:])
    got, http, live_before, live_after = readings[-1]
    assert http <= before_kill + live_after + 0.1, (http, before_kill, live_before, live_after)
    assert got[("tracker_process_cpu_seconds_total", "store")] == pytest.approx(
        cpu_of(c, "store"), abs=0.1)
    assert got[("tracker_process_cpu_seconds_total", "supervisor")] == pytest.approx(
        own_cpu_seconds(c.proc.pid), abs=0.1)
    assert got[("tracker_worker_restarts_total", None)] == 1
    assert got[("tracker_process_resident_memory_bytes", "http")] > 2 * (4 << 20)
    assert c.stop() == 0


def connections_accepted(conn):
    """The counter, asked on an already counted keep-alive connection (a new
    connection would count itself)."""
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 200
    return next(s.value for f in text_string_to_metric_families(body) for s in f.samples
                if s.name == "tracker_connections_accepted_total")


def settled(conn):
    """The counter once it has stopped moving (both workers have synced what
    they accepted: they sync twice a second, the answering one also before
    the scrape)."""
    last, deadline = connections_accepted(conn), time.monotonic() + 20
    while True:
        time.sleep(1.2)
        now = connections_accepted(conn)
        if now == last:
            return now
        assert time.monotonic() < deadline, "the connection counter never settled"
        last = now


def test_accepted_connections_are_counted_once_each(collector_factory):
    c = collector_factory(workers=2)
    conn = c.connection()
    try:
        first = settled(conn)
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while s.recv(4096):
                    pass
        assert settled(conn) - first == 30
    finally:
        conn.close()


def test_cpus_and_monthly_cost_follow_the_config(collector_factory):
    c = collector_factory(workers=1)
    got = scrape(c)
    assert got[("tracker_cpus", None)] == usable_cpus()
    assert ("tracker_server_monthly_cost_dollars", None) not in got
    c.write_config({**c.config, "ServerMonthlyCost": 24.5})
    c.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: scrape(c).get(("tracker_server_monthly_cost_dollars", None)) == 24.5,
                    20), c.logs()
    assert c.stop() == 0
