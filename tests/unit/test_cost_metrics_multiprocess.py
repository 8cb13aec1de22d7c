"""The cost metrics in a real multiprocess directory: the supervisor's CPU
per role, node facts and restarts (SupervisorStats), and the HTTP workers'
accepted connections, spool fill and readiness (WorkerStats), each written
by its own process as in the collector, read back with ``exposition``."""
import json
import os
import subprocess
import sys

import pytest
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import exposition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUPERVISOR = """
import sys
from engine.metrics import RoleUsage, SupervisorStats
cpu = {}
usage = RoleUsage(cpu.get, lambda pid: 1000 if pid in cpu else None)
stats = SupervisorStats(usage)
stats.bind()
stats.configured(4, float(sys.argv[1]))
usage.started(1, "supervisor")
usage.started(10, "http")
usage.started(20, "store")
cpu.update({1: 0.5, 10: 2.0, 20: 1.0})
stats.sync()
usage.reaped(10, 2.5)            # an HTTP worker died ...
stats.restarted()
usage.started(11, "http")        # ... and was respawned
cpu[11] = 0.25
stats.sync()
"""

WORKER = """
import sys
from types import SimpleNamespace
from engine.http.protocol import ConnectionRegistry
from engine.metrics import WorkerStats
accepted, spooled, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
limits = SimpleNamespace(idle_timeout=1, read_timeout=1, write_timeout=1,
                         max_header_bytes=1, max_body_bytes=1)
registry = ConnectionRegistry(limits)
registry.accepted = accepted     # what connection_made counted
stats = WorkerStats()
stats.bind()
stats.sources.append(registry.drain_accepted)
stats.gauges = lambda: (0, 0, spooled)
stats.spool_limit = 1000
stats.ready = lambda: ready
stats.sync()
stats.sync()                     # drained: a second sync adds nothing
assert registry.accepted == 0
"""


def run(directory, script, *args):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory),
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env)
    assert proc.wait(60) == 0
    return proc.pid


def values(directory):
    """{(name, (label values...)): value} of every sample."""
    text = exposition(str(directory)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def role(name, r):
    return (name, (("role", r),))


@pytest.mark.parametrize("cost", [0, 18.5])
def test_supervisor_publishes_cpu_per_role_with_exited_processes(tmp_path, cost):
    run(tmp_path, SUPERVISOR, cost)
    got = values(tmp_path)
    assert got[role("tracker_process_cpu_seconds_total", "http")] == 2.75   # 2.5 exited + 0.25
    assert got[role("tracker_process_cpu_seconds_total", "store")] == 1.0
    assert got[role("tracker_process_cpu_seconds_total", "supervisor")] == 0.5
    assert got[role("tracker_process_resident_memory_bytes", "http")] == 1000   # live ones only
    assert got[("tracker_cpus", ())] == 4
    assert got[("tracker_worker_restarts_total", ())] == 1
    # Unset ServerMonthlyCost: no series (a 0 would make the per-dollar rules infinite)
    assert got.get(("tracker_server_monthly_cost_dollars", ())) == (cost or None)


def test_workers_sum_connections_and_report_the_worst_spool_and_readiness(tmp_path):
    run(tmp_path, WORKER, 7, 100, 1)
    stuck = run(tmp_path, WORKER, 5, 850, 0)
    got = values(tmp_path)
    assert got[("tracker_connections_accepted_total", ())] == 12
    assert got[("tracker_spool_fill_ratio", ())] == 0.85
    assert got[("tracker_ready", ())] == 0
    multiprocess.mark_process_dead(stuck, str(tmp_path))    # the supervisor reaped it
    got = values(tmp_path)
    assert got[("tracker_ready", ())] == 1
    assert got[("tracker_spool_fill_ratio", ())] == 0.1
    assert got[("tracker_connections_accepted_total", ())] == 12   # counters outlive the process
