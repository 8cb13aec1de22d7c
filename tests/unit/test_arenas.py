"""engine/system/_arenas.pyx: freed object arenas kept for reuse, within a
budget; run in a fresh interpreter (the allocator is process-wide)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import json, resource, sys
from engine.system import _arenas

def churn():
    batch = [{"n": i, "text": "x%d" % i, "pair": [i, i]} for i in range(60_000)]
    del batch

churn()                                   # arenas mapped once, before keeping
slots = _arenas.keep(int(sys.argv[1]))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    churn()
kept, reused, released = _arenas.stats()
print(json.dumps({"slots": slots, "kept": kept, "reused": reused, "released": released,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}))
"""


def probe(budget):
    out = subprocess.run([sys.executable, "-c", PROBE, str(budget)], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def test_freed_arenas_are_reused_and_not_faulted_in_again():
    kept = probe(256 << 20)
    none = probe(0)
    assert kept["slots"] == 256 and none["slots"] == 0
    assert kept["released"] == 0 and kept["kept"] > 10
    assert kept["reused"] >= 4 * kept["kept"]      # every churn after the first
    assert none["reused"] == 0 and none["released"] > 10
    # Without keeping, each churn maps its arenas again (~256 pages each).
    assert kept["faults"] * 4 < none["faults"]


def test_arenas_past_the_budget_go_back_to_the_kernel():
    small = probe(4 << 20)
    assert small["slots"] == 4
    assert small["kept"] <= 4 and small["released"] > 10
    assert small["reused"] > 0
