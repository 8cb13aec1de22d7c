"""setup.py compiles the store's planners (engine/store/fanout.py and the
Cassandra sink's plan.py and stamps.py) with Cython, typed by the .pxd beside
each; the same .py files still run as plain Python where the build is
missing. Both must plan alike: here the built modules against their own
source run by the interpreter, on batches that reach every branch."""
import random
import sys
import types
import uuid
from pathlib import Path

import pytest

from engine.store import fanout
from engine.store.sinks.cassandra import plan, stamps
from engine.store.sinks.cassandra.wire_acsylla import AcsyllaCodec
from engine.store.sinks.cassandra.wire_datastax import DatastaxCodec

COMPILED = {"engine.store.fanout": fanout, "engine.store.sinks.cassandra.stamps": stamps,
            "engine.store.sinks.cassandra.plan": plan}
T0 = 1_800_000_000_000


def from_source(name):
    """Module ``name`` run from its .py (the interpreter, not the build)."""
    path = Path(COMPILED[name].__file__).with_name(name.rsplit(".", 1)[1] + ".py")
    module = types.ModuleType(f"source_{name}")
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def pure():
    """(fanout, stamps, plan) from source; plan.py's imports find the other two."""
    saved = {name: sys.modules[name] for name in COMPILED}
    try:
        sys.modules["engine.store.fanout"] = pure_fanout = from_source("engine.store.fanout")
        sys.modules["engine.store.sinks.cassandra.stamps"] = pure_stamps = from_source(
            "engine.store.sinks.cassandra.stamps")
        pure_plan = from_source("engine.store.sinks.cassandra.plan")
    finally:
        sys.modules.update(saved)
    return pure_fanout, pure_stamps, pure_plan


def test_the_planners_are_built():
    for name, module in COMPILED.items():
        assert Path(module.__file__).suffix == ".so", (
            f"{name} runs from source: build it (pip install -e . or "
            f"python setup.py build_ext --inplace)")


def events(n, seed):
    """Batches with every optional field the fan-out and the plan look at,
    repeated visitors and eids (duplicates), non-version-1 eids, long texts."""
    rnd = random.Random(seed)
    vids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n // 4 + 1)]
    out = []
    for i in range(n):
        vid = rnd.choice(vids)
        eid = str(uuid.uuid1(clock_seq=i)) if rnd.random() < 0.8 else str(uuid.uuid4())
        ev = {"eid": eid, "vid": vid, "sid": vid if rnd.random() < 0.5 else str(uuid.uuid4()),
              "created": T0 + rnd.randrange(5000), "first": rnd.random() < 0.5}
        for key, value in (("ip", f"10.0.0.{rnd.randrange(4)}"), ("uid", f"u{rnd.randrange(9)}"),
                           ("url", "https://s/" + "p" * rnd.randrange(3000)),
                           ("last", f"https://r/{rnd.randrange(5)}"),
                           ("ref", f"r{rnd.randrange(3)}"),
                           ("aff", "a1"), ("username", f"n{rnd.randrange(3)}"),
                           ("latlon", [rnd.uniform(-60, 60), rnd.uniform(-150, 150)]),
                           ("vp", [rnd.randrange(2000), rnd.randrange(2000)]),
                           ("params", {"k": str(rnd.randrange(9))}), ("browser", "Mozilla/5.0"),
                           ("bhash", "h1"), ("outcome", "buy"), ("sink", "s1"),
                           ("score", rnd.random()), ("new_visitor", True), ("ename", "view")):
            if rnd.random() < 0.5:
                ev[key] = value
        out.append(ev)
        if rnd.random() < 0.05:
            out.append(dict(ev))                   # a replay of the same eid
    return out


def as_data(p):
    """A Plan as plain data, to compare across the two builds."""
    def requests(rs):
        return [(r.partition, r.counter, r.conditional,
                 [(w.table, w.values, w.sparse, w.size, w.origin) for w in r.writes]) for r in rs]
    return requests(p.rows), requests(p.counters), p.events, p.partitions


@pytest.mark.parametrize("codec", [AcsyllaCodec, DatastaxCodec])
@pytest.mark.parametrize("options", [{}, {"paxos": True}, {"max_statements": 3, "max_bytes": 600}])
def test_compiled_and_source_planners_plan_alike(pure, codec, options):
    built, source = plan.Planner(codec, **options), pure[2].Planner(codec, **options)
    for seed in range(4):                      # later batches meet settled rows
        batch = events(400, seed)
        a, b = built.plan(list(batch)), source.plan(list(batch))
        assert as_data(a) == as_data(b)
        assert a.statements == b.statements
        if built.settled is not None:
            origins = [w.origin for r in a.rows for w in r.writes if w.origin is not None]
            built.settled.confirm(origins)
            source.settled.confirm(origins)
            assert built.settled.tables == source.settled.tables
            assert built.settled.count == source.settled.count
    assert as_data(built.plan([])) == as_data(source.plan([]))


def test_compiled_and_source_fan_out_alike(pure):
    batch = events(600, 9)
    a, b = fanout.fan_out(batch), pure[0].fan_out(batch)
    assert list(a) == list(b) and a.rows == b.rows and a.counters == b.counters


def test_compiled_and_source_stamps_alike(pure):
    eids = [str(uuid.uuid1()) for _ in range(50)] + [str(uuid.uuid4()) for _ in range(5)]
    for eid in eids:
        for created in (T0, T0 - 1, T0 + 10 ** 9):
            assert stamps.both_ts(created, eid) == pure[1].both_ts(created, eid)
            assert stamps.both_ts(created, uuid.UUID(eid)) == pure[1].both_ts(created, eid)
            assert stamps.sub_ms(created, eid) == pure[1].sub_ms(created, eid)
