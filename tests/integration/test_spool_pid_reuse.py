"""A restarted container brings the same pids back: what a dead worker left
(its spool file, its counter residue) must survive the next worker's start
and be adopted, not overwritten.

Found by tests/integration/test_swarm.py: a collector task killed with
`docker kill` was replaced by one whose workers had the same pids, whose new
spool file took the dead worker's file name, and the acknowledged events in
it that no store had yet were lost. Here each "worker" is a process started
in a new PID namespace (``unshare --pid``), so both get pid 1, as two
successive containers' first processes do.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

UNSHARE = shutil.which("unshare")


def in_new_pid_namespace(code, *args):
    """Run Python ``code`` as pid 1 of a new PID namespace; its stdout."""
    done = subprocess.run([UNSHARE, "--pid", "--fork", sys.executable, "-c", code, *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def pid_namespaces_work():
    if UNSHARE is None:
        return False
    done = subprocess.run([UNSHARE, "--pid", "--fork", sys.executable, "-c",
                           "import os; print(os.getpid())"], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == "1"


needs_pid_namespaces = pytest.mark.skipif(not pid_namespaces_work(),
                                          reason="cannot create a PID namespace here")

DEAD_SPOOL = """
import os, sys
from engine.spool import SpoolWriter
w = SpoolWriter(sys.argv[1], ["0:cassandra"], 1 << 20)
w.append({"eid": "undelivered"})
_, data, group = w.take_group()
w.write_group(data, group[-1][0])
print(os.getpid(), w.path)
os._exit(0)         # killed: nothing closed, nothing acknowledged
"""

NEXT_SPOOL = """
import json, os, sys
from engine.spool import SpoolWriter, find_orphans, read_records
w = SpoolWriter(sys.argv[1], ["0:cassandra"], 1 << 20)
orphans = [p for p, _ in find_orphans(sys.argv[1], exclude={w.path})]
print(json.dumps({"pid": os.getpid(), "orphans": orphans,
                  "records": [read_records(p)[0] for p in orphans]}))
"""


@needs_pid_namespaces
def test_next_worker_with_the_same_pid_keeps_the_dead_ones_spool(tmp_path):
    pid, dead_path = in_new_pid_namespace(DEAD_SPOOL, str(tmp_path)).split()
    found = json.loads(in_new_pid_namespace(NEXT_SPOOL, str(tmp_path)))
    assert pid == "1" and found["pid"] == 1
    assert found["orphans"] == [dead_path]
    assert found["records"] == [[[1, {"eid": "undelivered"}]]]


DEAD_RESIDUE = """
import os, sys
from engine.sinks.counter_residue import CounterResidue
r = CounterResidue(sys.argv[1], "cassandra-ks-1")
r.open()
r.add({("hits", ("u",)): 2})
os._exit(0)
"""

NEXT_RESIDUE = """
import os, sys
from engine.sinks.counter_residue import CounterResidue
r = CounterResidue(sys.argv[1], "cassandra-ks-1")
r.open()
print(r.adopt_orphans(), r.items)
"""


@needs_pid_namespaces
def test_next_worker_with_the_same_pid_adopts_the_dead_ones_counter_residue(tmp_path):
    in_new_pid_namespace(DEAD_RESIDUE, str(tmp_path))
    out = in_new_pid_namespace(NEXT_RESIDUE, str(tmp_path))
    assert out.strip() == "1 {('hits', ('u',)): 2}"
    assert any(n.endswith(".counters") for n in os.listdir(tmp_path))
