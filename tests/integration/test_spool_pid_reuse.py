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
import asyncio, os, sys
import uvloop
from engine._parse import TimeUUIDGen, encode_track
from engine.ingest._spool import SpoolWriter

async def main():
    w = SpoolWriter(sys.argv[1], 1 << 20)
    w.start(asyncio.get_running_loop())
    w.append(encode_track(b"/tr/v1/m/undelivered", None, None, "10.0.0.1", None, None,
                          None, 1, TimeUUIDGen()))
    await w.flush()                 # durable: its answer would be a 2xx
    print(os.getpid(), w.path)
    sys.stdout.flush()
    os._exit(0)                     # killed: nothing closed, nothing delivered

uvloop.run(main())
"""

NEXT_SPOOL = """
import asyncio, json, os, sys
import uvloop
from engine.ingest._spool import SpoolWriter
from engine.spool import is_final, read_records, spool_files

async def main():
    w = SpoolWriter(sys.argv[1], 1 << 20)
    w.start(asyncio.get_running_loop())
    others = sorted(p for p in spool_files(sys.argv[1]) if p != w.path)
    print(json.dumps({"pid": os.getpid(), "mine": w.path, "others": others,
                      "final": [is_final(p) for p in others],
                      "records": [[[seq, event["params"]] for seq, event in read_records(p)[0]]
                                  for p in others]}))
    w.close()

uvloop.run(main())
"""


@needs_pid_namespaces
def test_next_worker_with_the_same_pid_keeps_the_dead_ones_spool(tmp_path):
    pid, dead_path = in_new_pid_namespace(DEAD_SPOOL, str(tmp_path)).split()
    found = json.loads(in_new_pid_namespace(NEXT_SPOOL, str(tmp_path)))
    assert pid == "1" and found["pid"] == 1
    assert found["mine"] != dead_path and found["others"] == [dead_path]
    assert found["final"] == [True]           # no writer: the store reads it to its end
    assert found["records"] == [[[1, {"m": "undelivered"}]]]


DEAD_RESIDUE = """
import os, sys
from engine.store.sinks.counter_residue import CounterResidue
r = CounterResidue(sys.argv[1], "cassandra-ks-1")
r.open()
r.add({("hits", ("u",)): 2})
os._exit(0)
"""

NEXT_RESIDUE = """
import os, sys
from engine.store.sinks.counter_residue import CounterResidue
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
