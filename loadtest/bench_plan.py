#!/usr/bin/env python3
"""The Cassandra planner's CPU per event, without Cassandra.

    .venv/bin/python loadtest/bench_plan.py [--events 21000] [--rounds 12]
        [--codec native|acsylla] [--before REV | --checkout DIR]

``Planner.plan`` (fan-out, the requests of each partition, values as the
``--codec``'s driver binds them: native, the default driver, unless told)
and ``Settled.confirm`` of what a batch wrote, in batches of
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

``--checkout DIR`` compares built against built: DIR is another checkout of
the project with its extensions built in place (``git worktree add DIR REV``,
a ``.venv`` there or linked to this one, ``python setup.py build_ext
--inplace``). Each round runs one process per checkout, on cpu 1 where there
is one, in alternating order, each planning the same events with its own
engine; the median of the paired differences is printed as well.
"""
import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A --round process plans with the engine of the checkout it was given
# (first on the path), and this file's loadtest helpers.
_ENGINE_ROOT = sys.argv[sys.argv.index("--round") + 1] if "--round" in sys.argv else ROOT
sys.path[:0] = [_ENGINE_ROOT, os.path.join(ROOT, "loadtest")]

from engine.store.sinks.cassandra import plan as current                 # noqa: E402
from engine.system import gc_tuning                                     # noqa: E402
# after the engine: bench_cassandra puts this checkout first on the path
from bench_cassandra import mix_events                                  # noqa: E402

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


def codec_named(name):
    if name == "acsylla":
        from engine.store.sinks.cassandra.wire_acsylla import AcsyllaCodec
        return AcsyllaCodec
    from engine.store.sinks.cassandra.wire_native import NativeCodec
    return NativeCodec


def us_per_event(module, events, codec):
    planner = module.Planner(codec)
    started = time.process_time()
    for i in range(0, len(events), BATCH):
        plan = planner.plan(events[i:i + BATCH])
        planner.settled.confirm([w.origin for r in plan.rows for w in r.writes
                                 if w.origin is not None])
    return (time.process_time() - started) / len(events) * 1e6


def one_round(events_path, codec_name):
    """In a --round process: this checkout's built planner on the pickled
    events, once unmeasured, then measured; prints µs per event."""
    with open(events_path, "rb") as fh:
        events = pickle.load(fh)
    gc_tuning.tune("store-bench")
    codec = codec_named(codec_name)
    us_per_event(current, events[:BATCH], codec)
    print(json.dumps({"us": us_per_event(current, events, codec), "plan": current.__file__}))


def run_round(checkout, events_path, codec_name):
    from bench_http import checkout_round
    got = checkout_round(checkout, __file__, checkout, events_path, "--codec", codec_name)
    if not got["plan"].startswith(os.path.join(checkout, "")) or not got["plan"].endswith(".so"):
        raise SystemExit(f"{checkout}: planned with {got['plan']}, not its own build")
    return got["us"]


def compare_checkouts(args, events):
    sides = {"this checkout": ROOT, f"checkout {args.checkout}": os.path.abspath(args.checkout)}
    runs = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "events.pickle")
        with open(path, "wb") as fh:
            pickle.dump(events, fh)
        for r in range(args.rounds):
            order = list(sides.items())
            for name, checkout in order if r % 2 == 0 else order[::-1]:
                runs[name].append(run_round(checkout, path, args.codec))
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=21000)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--codec", choices=("native", "acsylla"), default="native",
                    help="whose values the plan builds (native: the default driver)")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--before", help="a git revision whose plan.py runs alongside, from source")
    which.add_argument("--checkout", help="another checkout, built in place, run alongside")
    ap.add_argument("--round", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.round:
        return one_round(args.round[1], args.codec)
    events = mix_events(args.events, 7)
    if args.checkout:
        runs = compare_checkouts(args, events)
    else:
        runs = compare_in_process(args, events)
    print(f"Planner.plan + Settled.confirm, {args.events} events of issue 17's mix in batches "
          f"of {BATCH}, {args.codec} codec, {args.rounds} rounds alternating; µs of CPU per "
          f"event:")
    for name, values in runs.items():
        print(f"  {name:24s} median {statistics.median(values):6.2f}  min {min(values):6.2f}")
    if len(runs) == 2:
        other = next(name for name in runs if name != "this checkout")
        diffs = [x - y for x, y in zip(runs["this checkout"], runs[other])]
        print(f"  this checkout - {other}: median of paired differences "
              f"{statistics.median(diffs):+.2f} (lower in {sum(d < 0 for d in diffs)} of "
              f"{len(diffs)} rounds)")


def compare_in_process(args, events):
    versions = {"this checkout": current}
    if args.before:
        versions = {f"plan.py at {args.before}": plan_at(args.before), **versions}
    codec = codec_named(args.codec)
    gc_tuning.tune("store-bench")
    runs = {name: [] for name in versions}
    for module in versions.values():        # unmeasured: first-use costs (caches, arenas)
        us_per_event(module, events[:BATCH], codec)
    for r in range(args.rounds):
        order = list(versions.items())
        for name, module in order if r % 2 == 0 else order[::-1]:
            runs[name].append(us_per_event(module, events, codec))
    return runs


if __name__ == "__main__":
    main()
