#!/usr/bin/env python3
"""The Cassandra planner's CPU per event, without Cassandra.

    .venv/bin/python loadtest/bench_plan.py [--events 21000] [--rounds 12] [--before REV]

``Planner.plan`` (fan-out, the requests of each partition, values as acsylla
binds them) and ``Settled.confirm`` of what a batch wrote, in batches of
1,000 events of issue 17's mix (bench_cassandra.mix_events), with the store
process's garbage collector settings. This is the part of the sink's cost
that is ours in Python (docs/cassandra.md); bench_cassandra.py measures the
whole sink against a real node, where the noise of the driver and the JVM
hides a few µs.

``--before REV`` also loads plan.py, and the fanout.py and stamps.py it
plans with, as they were at git revision REV (the rest of the engine from
this checkout), from their source: run by the interpreter, not the Cython
build setup.py makes of them. It alternates the two in this process, so
both see the same machine: medians and minima of the rounds. ``--before
HEAD`` is the built planner against the same code as plain Python.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "loadtest")]

from bench_cassandra import mix_events                                  # noqa: E402
from engine.store.sinks.cassandra import plan as current                 # noqa: E402
from engine.store.sinks.cassandra.wire_acsylla import AcsyllaCodec      # noqa: E402
from engine.system import gc_tuning                                     # noqa: E402

BATCH = 1000
PLAN_PATH = "engine/store/sinks/cassandra/plan.py"
PLANNED_WITH = {"engine.store.fanout": "engine/store/fanout.py",
                "engine.store.sinks.cassandra.stamps": "engine/store/sinks/cassandra/stamps.py"}


def source_at(rev, path, name):
    """The module ``path`` as it was at git revision ``rev``, run from its
    source (never a compiled build of it); None if it did not exist then."""
    done = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{path}"], capture_output=True)
    if done.returncode != 0:
        if b"exists on disk, but not in" in done.stderr or b"does not exist" in done.stderr:
            return None
        raise SystemExit(f"--before {rev}: {done.stderr.decode().strip()}")
    module = types.ModuleType(name)
    exec(compile(done.stdout, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def plan_at(rev):
    """plan.py as it was at ``rev``, planning with fanout.py and stamps.py as
    they were then, all three from source: setup.py compiles them now, so
    this is also the pure-Python planner against the built one."""
    saved = {name: sys.modules.get(name) for name in PLANNED_WITH}
    try:
        for name, path in PLANNED_WITH.items():
            module = source_at(rev, path, name)
            if module is not None:
                sys.modules[name] = module     # what plan.py's imports find
        plan = source_at(rev, PLAN_PATH, f"plan_at_{rev}")
        if plan is None:
            raise SystemExit(f"--before {rev}: no {PLAN_PATH} there")
        return plan
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def us_per_event(module, events):
    planner = module.Planner(AcsyllaCodec)
    started = time.process_time()
    for i in range(0, len(events), BATCH):
        plan = planner.plan(events[i:i + BATCH])
        planner.settled.confirm([w.origin for r in plan.rows for w in r.writes
                                 if w.origin is not None])
    return (time.process_time() - started) / len(events) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=21000)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--before", help="a git revision whose plan.py runs alongside")
    args = ap.parse_args()
    versions = {"this checkout": current}
    if args.before:
        versions = {f"plan.py at {args.before}": plan_at(args.before), **versions}
    events = mix_events(args.events, 7)
    gc_tuning.tune("store-bench")
    runs = {name: [] for name in versions}
    for module in versions.values():        # unmeasured: first-use costs (caches, arenas)
        us_per_event(module, events[:BATCH])
    for r in range(args.rounds):
        order = list(versions.items())
        for name, module in order if r % 2 == 0 else order[::-1]:
            runs[name].append(us_per_event(module, events))
    print(f"Planner.plan + Settled.confirm, {args.events} events of issue 17's mix in batches "
          f"of {BATCH}, {args.rounds} rounds alternating; µs of CPU per event:")
    for name, values in runs.items():
        print(f"  {name:24s} median {statistics.median(values):6.2f}  min {min(values):6.2f}")


if __name__ == "__main__":
    main()
