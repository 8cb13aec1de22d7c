"""engine/system/gc_tuning.py: each role's collector settings, run in a fresh
interpreter (the settings are process-wide)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import gc, json, sys
from engine.system import gc_tuning
before = gc.get_freeze_count()
gc_tuning.tune(sys.argv[1])
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count() - before}))
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


@pytest.mark.parametrize("role", ["http-0", "acme-0"])
def test_request_roles_keep_the_default_young_threshold(role):
    got = probe(role)
    assert got["threshold"] == [700, 10, 10]
    assert got["frozen"] > 1000


def test_tracker_gc_python_leaves_every_default():
    got = probe("store-0", TRACKER_GC="python")
    assert got == {"threshold": [700, 10, 10], "frozen": 0}
