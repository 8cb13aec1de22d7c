"""engine/system/gc_tuning.py: each role's collector and arena settings, run in
a fresh interpreter (the settings are process-wide)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import gc, json, sys
from engine.system import _arenas, gc_tuning
before = gc.get_freeze_count()
gc_tuning.tune(sys.argv[1])
for _ in range(3):     # a batch's worth of event-like dicts made and freed
    batch = [{"eid": str(i), "url": "/p%d" % (i % 50), "latlon": [1.5, 2.5]} for i in range(50_000)]
    del batch
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count() - before,
                  "arenas_reused": _arenas.stats()[1]}))
"""


def probe(role, **env):
    out = subprocess.run([sys.executable, "-c", PROBE, role], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, **env}, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("role", ["store-0", "consume-1"])
def test_batch_roles_collect_young_objects_rarely_and_freeze_what_booted(role):
    got = probe(role)
    assert got["threshold"] == [50_000, 20, 100]
    assert got["frozen"] > 1000          # the modules imported so far
    assert got["arenas_reused"] > 10     # the second and third batch reused the first's


@pytest.mark.parametrize("role", ["http-0", "acme-0"])
def test_request_roles_keep_the_default_young_threshold(role):
    got = probe(role)
    assert got["threshold"] == [700, 10, 10]
    assert got["frozen"] > 1000
    assert got["arenas_reused"] == 0     # the interpreter's own arena allocator


def test_tracker_gc_python_leaves_every_default():
    got = probe("store-0", TRACKER_GC="python")
    assert got["threshold"] == [700, 10, 10] and got["frozen"] == 0
    assert got["arenas_reused"] > 10     # arenas are a setting of their own


def test_tracker_arenas_python_leaves_the_interpreters_arena_allocator():
    got = probe("store-0", TRACKER_ARENAS="python")
    assert got["threshold"] == [50_000, 20, 100]
    assert got["arenas_reused"] == 0
