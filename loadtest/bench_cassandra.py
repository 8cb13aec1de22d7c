#!/usr/bin/env python3
"""The Cassandra sink against real nodes: drivers, the node's own limit, a
running collector, 1 node against 3, and a node lost under load.

    .venv/bin/python loadtest/bench_cassandra.py [--events 20000] [--rounds 3]
        [--drivers acsylla,native,cassandra-driver,scylla-driver,wave-1]
        [--skip drivers,limit,e2e,cluster] [--cluster-driver native|acsylla]
        [--before DIR] [--engines compatible,latest] [--warm-units 15]

Events are issue 17's mix, made by the compiled parser exactly as the
collector makes them from loadtest/cassandra_mix.lua's requests: 60 %
returning visitors (a `vid` cookie from a pool of 20,000), 50 pages, 20
referrers, lat/lon and score, no `first` (so every event is a first event),
one of 40 user agents. Every measured workload follows a warm-up of its own
kind (2,000 events or writes at a time, until the JVM's JIT compilers use
under 5 % of its CPU, at most ``--warm-units`` times), and the node's CPU is
also split by kind of thread. Sections, in one run (1-3 once per storage
engine of ``--engines``, each on a node of its own; scripts/cassandra_node.py):

1. drivers: what the plan writes per event (row and counter partitions,
   statements and cells per table), then the sink's ``write_batch`` in
   batches of 1,000 (BatchMaxEvents) with each driver on one node (heap
   ``--heap``): events/s, client CPU per event (this process, every thread),
   Cassandra CPU per event, statements, requests and partitions per event;
   then the stored rows and counters are read back and checked. scylla-driver installs the same ``cassandra``
   package as cassandra-driver, so it runs in a venv of its own (made once
   under ~/.cache/tracker), through this script's ``--worker`` mode.
2. the node's limit: the simplest single-row prepared insert, the
   simplest counter increment, and a single-row insert as wide as the
   plan's average row partition (its cells and bytes per cell, from
   section 1's census), from the same client (acsylla, same concurrency,
   rounds interleaved): writes/s and Cassandra CPU per write; the sink's
   Cassandra CPU per event against (partitions per event) x (CPU per
   simplest insert), against the same with counter partitions priced as
   counter increments, with row partitions priced as the wide insert (the
   same cells in one row), and with each row statement (a row of one table)
   priced as the simplest insert. The sink's write_batch (native wire) runs
   in the same interleaved rounds, since the node keeps getting cheaper
   long after its warm-up: section 1's figures come from a younger node.
   A first round of each kind is dropped.
3. a running collector (loadtest/cassandra_e2e.py): spool only against
   Cassandra, same requests, same core: the sink's CPU per event, the store
   process's own; with ``--before DIR`` (a checkout of an earlier version
   with its own .venv) that version's collector too, in the same rounds.
4. a 3-node cluster on 127.0.0.2-.4 (heaps 1 GiB, RF 3, LOCAL_QUORUM): events/s
   and Cassandra CPU per event against one node; then a node killed under
   load and restarted: events/s meanwhile, every event stored once, and the
   catch-up time (from the restarted node answering CQL until its own copy,
   read at ONE from it alone, holds every event).
"""
import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import cassandra_node  # noqa: E402

from loadtest.bench_http import checkout_tracker  # noqa: E402
from loadtest.bench_http import task_cpu  # noqa: E402

from engine.config import config_from_dict  # noqa: E402
from engine.store.sinks.base import SinkUnavailable  # noqa: E402
from engine.store.sinks.cassandra import CassandraSink  # noqa: E402

BATCH = 1000
SCYLLA_DRIVER = "scylla-driver==3.29.12"
SIDE_PACKAGES = (SCYLLA_DRIVER, "orjson==3.13.0", "tzdata==2026.6")
DRIVERS = ("acsylla", "native", "cassandra-driver", "scylla-driver", "wave-1")
# "wave-1": the sink as it was before it became a package (one module,
# cassandra-driver, one request per counter), taken from git history.
WAVE1 = ("9fe716d3c4b77b7747dfc45193cb16732aa488a2", "engine/store/sinks/cassandra.py")


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except FileNotFoundError:
            pass
    return total


def thread_cpu(pids):
    """Each live thread of ``pids`` as {(pid, tid): (kind, CPU seconds)}, its
    kind the thread's name without its number (Cassandra names its pools'
    threads ``<pool>:<n>``, the JVM ``C2 CompilerThread<n>``, ``GC
    Thread#<n>``), plus ``"all"``: the processes' own total, which also holds
    threads that have exited. Kept per thread, not summed per name:
    Cassandra's shared pool renames a worker thread after the stage it
    serves, which would move its whole past CPU from one kind to another
    between two readings."""
    out = {key: (THREAD_NUMBER.sub("", name) or "?", seconds)
           for key, (name, seconds) in task_cpu(pids).items()}
    out["all"] = cpu_seconds(pids)
    return out


def kind_cpu(before, after):
    """CPU seconds per kind of thread between two thread_cpu() readings, each
    thread's use charged to the kind it has at the second."""
    delta = collections.Counter()
    for key, value in after.items():
        if key != "all":
            delta[value[0]] += value[1] - before.get(key, (None, 0.0))[1]
    return delta


THREAD_NUMBER = re.compile(r"[-:#\s]*\d+$")


def thread_split(before, after, n, top=6):
    """The ``top`` kinds of thread by CPU µs per unit between two
    thread_cpu() readings, and what exited threads used."""
    delta = kind_cpu(before, after)
    gone = (after["all"] - before["all"]) - sum(delta.values())
    parts = sorted(((v, k) for k, v in delta.items() if v > 0), reverse=True)[:top]
    text = ", ".join(f"{k} {1e6 * v / n:.0f}" for v, k in parts)
    return text + (f", exited threads {1e6 * gone / n:.0f}" if gone > 0.005 else "")


JIT_THREADS = ("C2 CompilerThre", "C1 CompilerThre")   # thread names cut at 15 characters
WARM_UNITS = 15                    # --warm-units: main() sets it


async def warm_up(unit, jvm_pids, most=None):
    """Await ``unit(i)`` (one unit of the workload about to be measured) until
    the JVM's JIT compilers take under 5 % of its CPU during one, at most
    ``most`` times; return how many ran. A young JVM spends much of its CPU
    compiling (C2 took ~10 % of it after 20,000 events): measured cold, a
    workload is charged for the node's warm-up, not for its writes."""
    most = most or WARM_UNITS
    for i in range(1, most + 1):
        before = thread_cpu(jvm_pids)
        await unit(i)
        after = thread_cpu(jvm_pids)
        jit = sum(kind_cpu(before, after)[k] for k in JIT_THREADS)
        if jit < 0.05 * (after["all"] - before["all"]):
            return i
    return most


# ---------------------------------------------------------------- the events

def mix_events(n, seed):
    """``n`` events of the mix, as the store process reads them."""
    import random
    from engine.parser import load_parser
    rnd = random.Random(seed)
    parser = load_parser()
    ids = parser.TimeUUIDGen()
    url_filter = config_from_dict({"TLS": "off"}).url_filter
    pool = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(20000)]
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        path = (f"/tr/v1/ename/view/url/https%3A%2F%2Fshop.example%2Fp%2F{rnd.randint(1, 50)}"
                f"/ref/r{rnd.randint(1, 20)}/lat/{rnd.uniform(-60, 60):.4f}"
                f"/lon/{rnd.uniform(-150, 150):.4f}/score/{rnd.randint(0, 9)}")
        visitor = rnd.randrange(len(pool))
        cookie = pool[visitor] if rnd.random() < 0.6 else None
        out.append(parser.parse_track(path.encode(), None, None, "127.0.0.1",
                                      f"Mozilla/5.0 (X11; Linux x86_64) bench/{visitor % 40}",
                                      None, cookie, now + i // 10, ids, url_filter))
    return out


def census(events):
    """What the sink's plan writes per event of ``events`` (batches of BATCH,
    one planner, as one store process would): statements and cells (values
    bound, unset ones left out) per table, row and counter partitions."""
    from engine.store.sinks.cassandra.plan import Planner
    from engine.store.sinks.cassandra.wire_native import NativeCodec
    planner = Planner(NativeCodec)
    statements, cells = collections.Counter(), collections.Counter()
    row_parts = counter_parts = row_statements = row_cells = row_bytes = 0
    for i in range(0, len(events), BATCH):
        plan = planner.plan(events[i:i + BATCH])
        row_parts += len({r.partition for r in plan.rows})
        counter_parts += len({r.partition for r in plan.counters})
        for requests, is_row in ((plan.rows, True), (plan.counters, False)):
            for w in (w for request in requests for w in request.writes):
                values = ([v for _, v in w.values] if w.sparse else
                          [v for v in w.values if v is not None])
                statements[w.table] += 1
                cells[w.table] += len(values)
                if is_row:
                    row_statements += 1
                    row_cells += len(values)
                    row_bytes += sum(map(cell_bytes, values))
        planner.settled.confirm([w.origin for r in plan.rows for w in r.writes
                                 if w.origin is not None])
    n = len(events)
    return {"statements": {t: c / n for t, c in statements.items()},
            "cells": {t: c / n for t, c in cells.items()},
            "row_partitions": row_parts / n, "counter_partitions": counter_parts / n,
            "row_statements": row_statements / n, "row_cells": row_cells / n,
            "row_cell_bytes": row_bytes / max(row_cells, 1)}


def cell_bytes(value):
    """About what a bound value weighs on the wire: a uuid 16 bytes, a number
    8, a bool 1, text its UTF-8 length."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, str):
        return 16 if len(value) == 36 and value.count("-") == 4 else len(value.encode())
    return len(repr(value))


def row_width(c):
    """Cells and bytes per cell of the average row partition the plan writes:
    the shape of section 2's width-matched insert."""
    return max(2, round(c["row_cells"] / c["row_partitions"])), max(1, round(c["row_cell_bytes"]))


def report_census(c):
    tables = sorted(c["statements"], key=lambda t: -c["cells"][t])
    print(f"  the plan per event: {c['row_partitions']:.2f} row partitions, "
          f"{c['counter_partitions']:.2f} counter partitions, "
          f"{sum(c['statements'].values()):.2f} statements, {sum(c['cells'].values()):.1f} "
          "cells (statements/cells by table: "
          + ", ".join(f"{t} {c['statements'][t]:.2f}/{c['cells'][t]:.1f}" for t in tables
                      if c["statements"][t] >= 0.01) + ")", flush=True)


# ---------------------------------------------------------------- sinks

def entry(hosts, keyspace, **extra):
    return {"Service": "cassandra", "Hosts": hosts, "Context": keyspace, "Timeout": 20000,
            **extra}


def make_sink(e, sink_class=CassandraSink):
    cfg = config_from_dict({"TLS": "off", "SpoolDirectory": tempfile.mkdtemp(), "Notify": [e]})
    return sink_class(cfg.notify[0], cfg)


def wave1_sink_class():
    """The wave-1 sink's class, loaded from its source at WAVE1 (git)."""
    import importlib.util
    source = subprocess.run(["git", "-C", ROOT, "show", f"{WAVE1[0]}:{WAVE1[1]}"],
                            capture_output=True, text=True, check=True).stdout
    path = os.path.join(tempfile.mkdtemp(prefix="bench-wave1-"), "wave1_cassandra.py")
    with open(path, "w") as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("wave1_cassandra", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CassandraSink


async def write_all(sink, events, jvm_pids):
    """Write ``events`` in batches of BATCH; figures per event."""
    s0 = (sink.statements_sent, sink.requests_sent, getattr(sink, "partitions_sent", 0))
    threads0 = thread_cpu(jvm_pids)
    cpu0, jvm0, t0 = time.process_time(), threads0["all"], time.perf_counter()
    retries = 0
    for i in range(0, len(events), BATCH):
        while True:
            try:
                await sink.write_batch(events[i:i + BATCH])
                break
            except SinkUnavailable:    # a timeout under load: the stage would retry it whole
                retries += 1
                if retries > 20:
                    raise
                await asyncio.sleep(0.5)
    wall = time.perf_counter() - t0
    n = len(events)
    return {"eps": n / wall, "retries": retries,
            "client_us": 1e6 * (time.process_time() - cpu0) / n,
            "cassandra_us": 1e6 * (cpu_seconds(jvm_pids) - jvm0) / n,
            "threads": thread_split(threads0, thread_cpu(jvm_pids), n),
            "statements": (sink.statements_sent - s0[0]) / n,
            "requests": (sink.requests_sent - s0[1]) / n,
            "partitions": (getattr(sink, "partitions_sent", 0) - s0[2]) / n}


async def driver_rounds(driver, hosts, jvm_pids, events_n, rounds, keyspace, sink_class=None,
                        **extra):
    e = entry(hosts, keyspace, Driver=driver, **extra)
    sink_class = sink_class or CassandraSink
    await make_sink(e, sink_class).apply_schema()
    sink = make_sink(e, sink_class)
    await sink.start()
    try:
        warm = await warm_up(lambda i: write_all(sink, mix_events(2000, i), jvm_pids),
                             jvm_pids)
        out = [await write_all(sink, mix_events(events_n, 100 + r), jvm_pids)
               for r in range(rounds)]
        out[0]["warm_events"] = 2000 * warm
        return out
    finally:
        await sink.close()


def worker_main(args):
    """--worker: one driver's rounds in this process (a side venv), JSON out."""
    hosts = args.hosts.split(",")
    pids = [int(p) for p in args.pids.split(",")]
    result = asyncio.run(driver_rounds("cassandra-driver", hosts, pids, args.events,
                                       args.rounds, args.keyspace))
    import cassandra
    print(json.dumps({"rounds": result, "version": cassandra.__version__}))


def side_venv():
    """A venv with scylla-driver (and the few packages the sink imports
    besides the driver), made once; the tracker itself comes from ROOT."""
    cache = os.path.join(os.path.expanduser("~/.cache"), "tracker",
                         "bench-" + SCYLLA_DRIVER.replace("==", "-"))
    python = os.path.join(cache, "bin", "python")
    if not os.path.exists(os.path.join(cache, "complete")):
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", cache], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *SIDE_PACKAGES], check=True)
        open(os.path.join(cache, "complete"), "w").close()
    return python


def run_side(hosts, pids, events_n, rounds, keyspace):
    try:
        python = side_venv()
    except subprocess.CalledProcessError as exc:
        return {"error": f"cannot install {SCYLLA_DRIVER}: {exc}"}
    proc = subprocess.run([python, os.path.abspath(__file__), "--worker", "--hosts",
                           ",".join(hosts), "--pids", ",".join(map(str, pids)), "--events",
                           str(events_n), "--rounds", str(rounds), "--keyspace", keyspace,
                           "--warm-units", str(WARM_UNITS)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def patiently(read, timeout=180):
    """``read()``, retried while a node just restarted still refuses it
    (it may hold an older schema for a while: INCOMPATIBLE_SCHEMA)."""
    from cassandra import DriverException
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except DriverException:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def check_stored(hosts, port, keyspace, expected):
    """Read back what a run stored (cassandra-driver, paging): events, the
    per-visitor and per-url counters, each summing to the events written. At
    QUORUM: on the 3-node cluster a replica that was down may not have caught
    up yet (one node: the same as ONE)."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import Cluster
    cluster = Cluster([h.split(":")[0] for h in hosts], port=port)
    try:
        s = cluster.connect()
        s.default_timeout = 120
        s.default_consistency_level = ConsistencyLevel.QUORUM
        s.default_fetch_size = 5000       # rows counted here, page by page: no server-side count
        def total(column, table):
            query = f"SELECT {column} FROM {keyspace}.{table}"
            if column == "total":
                return patiently(lambda: sum(r.total for r in s.execute(query)))
            return patiently(lambda: sum(1 for _ in s.execute(query)))
        events, reqs, hits = total("vid", "events"), total("total", "reqs"), total("total", "hits")
        ok = events == reqs == hits == expected
        return ok, f"events {events}, reqs total {reqs}, hits total {hits}, expected {expected}"
    finally:
        cluster.shutdown()


def median(rounds, key):
    return statistics.median(r[key] for r in rounds)


def median_round(rounds, key="cassandra_us"):
    """The round whose ``key`` is the median (the upper one of an even count)."""
    return sorted(rounds, key=lambda r: r[key])[len(rounds) // 2]


def report_driver(name, rounds, check):
    print(f"  {name:17s} {median(rounds, 'eps'):7.0f} events/s  client CPU "
          f"{median(rounds, 'client_us'):6.0f} µs/event  Cassandra CPU "
          f"{median(rounds, 'cassandra_us'):6.0f} µs/event  {median(rounds, 'statements'):.2f} "
          f"statements, {median(rounds, 'requests'):.2f} requests, "
          f"{median(rounds, 'partitions'):.2f} partitions/event  "
          f"(rounds: {[round(r['eps']) for r in rounds]} events/s, batches retried "
          f"{sum(r.get('retries', 0) for r in rounds)}, after {rounds[0]['warm_events']} "
          f"warm-up events)  stored: {check}", flush=True)
    if rounds and "threads" in rounds[-1]:
        print(f"    Cassandra CPU µs/event by thread, median round: "
              f"{median_round(rounds)['threads']}", flush=True)


def drivers_section(args, node):
    print(f"\n== 1. drivers: the sink's write_batch, batches of {BATCH}, one node, "
          f"{args.events} events x {args.rounds} rounds", flush=True)
    hosts, pids = [f"127.0.0.1:{node.native_port}"], [node.pid]
    results = {}
    args.census = census(mix_events(args.events, 100))
    report_census(args.census)
    for driver in args.drivers:
        ks = f"bench_{driver.replace('-', '_')}_{int(time.time())}"
        if driver == "scylla-driver":
            out = run_side(hosts, pids, args.events, args.rounds, ks)
            if "error" in out:
                print(f"  scylla-driver: not measured: {out['error']}", flush=True)
                continue
            rounds, name = out["rounds"], f"scylla-driver {out['version']}"
        elif driver == "wave-1":
            try:
                wave1 = wave1_sink_class()
            except (subprocess.CalledProcessError, OSError, ImportError) as exc:
                print(f"  wave-1: not measured: {exc}", flush=True)
                continue
            rounds = asyncio.run(driver_rounds("cassandra-driver", hosts, pids, args.events,
                                               args.rounds, ks, sink_class=wave1))
            name = "wave-1 sink"
        else:
            rounds = asyncio.run(driver_rounds(driver, hosts, pids, args.events, args.rounds, ks))
            name = driver
        ok, text = check_stored(hosts, node.native_port, ks,
                                args.events * args.rounds + rounds[0]["warm_events"])
        report_driver(name, rounds, ("OK: " if ok else "WRONG: ") + text)
        results[driver] = rounds if ok else None
    good = {d: r for d, r in results.items() if r and d != "wave-1"}
    if good:
        best = min(good, key=lambda d: median(good[d], "client_us"))
        print(f"  cheapest per event with correct results: {best}", flush=True)
    return results


# ---------------------------------------------------------------- the node's limit

async def simplest_writes(host, port, jvm_pids, n, concurrency, rf=1, counter=False,
                          width=(2, 1), tables=1):
    """The simplest single-row prepared insert (``counter``: the simplest
    counter increment), ``n`` times, acsylla, the sink's concurrency; per
    write: Cassandra CPU, client CPU; writes/s. ``width`` (cells, bytes per
    cell) widens the insert's row: a uuid key and ``cells - 1`` text columns
    of that many bytes, each written. ``tables`` > 1: each write is a
    single-partition unlogged batch of that many such rows, one in each of as
    many tables (one key)."""
    import acsylla
    cluster = acsylla.create_cluster([host], port=port, request_timeout=20, log_level="error",
                                     consistency=acsylla.Consistency.LOCAL_QUORUM)
    s = await cluster.create_session()
    ks = f"bench_simple_{uuid.uuid4().hex[:12]}"
    await s.execute(acsylla.create_statement(
        f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', "
        f"'replication_factor': {rf}}}"))
    if counter:
        await s.execute(acsylla.create_statement(
            f"CREATE TABLE {ks}.kv (k uuid PRIMARY KEY, v counter)"))
        insert = await s.create_prepared(f"UPDATE {ks}.kv SET v = v + ? WHERE k = ?")
    else:
        columns = [f"v{i}" for i in range(1, width[0])]
        inserts = []
        for t in range(tables):
            await s.execute(acsylla.create_statement(
                f"CREATE TABLE {ks}.kv{t} (k uuid PRIMARY KEY, "
                + ", ".join(f"{c} text" for c in columns) + ")"))
            inserts.append(await s.create_prepared(
                f"INSERT INTO {ks}.kv{t} (k, {', '.join(columns)}) "
                f"VALUES (?{', ?' * len(columns)})"))
        insert = inserts[0]
        texts = ["x" * width[1]] * len(columns)
    bound = (lambda k: [1, k]) if counter else (lambda k: [k, *texts])
    keys = [str(uuid.uuid4()) for _ in range(n)]

    async def write(k):
        if tables == 1:
            st = insert.bind()
            st.bind_list(bound(k))
            await s.execute(st)
            return
        batch = acsylla.create_batch_unlogged()
        for prepared in inserts:
            st = prepared.bind()
            st.bind_list(bound(k))
            batch.add_statement(st)
        await s.execute_batch(batch)

    async def run(keys):
        pending = iter(keys)

        async def lane():
            for k in pending:
                await write(k)
        await asyncio.gather(*[lane() for _ in range(concurrency)])
    warm = await warm_up(lambda i: run([str(uuid.uuid4()) for _ in range(2000)]), jvm_pids)
    threads0 = thread_cpu(jvm_pids)
    cpu0, jvm0, t0 = time.process_time(), threads0["all"], time.perf_counter()
    await run(keys)
    wall = time.perf_counter() - t0
    threads1 = thread_cpu(jvm_pids)
    out = {"wps": n / wall, "cassandra_us": 1e6 * (threads1["all"] - jvm0) / n,
           "client_us": 1e6 * (time.process_time() - cpu0) / n,
           "threads": thread_split(threads0, threads1, n), "warm_writes": 2000 * warm}
    await s.close()
    return out


async def sink_writes(hosts, jvm_pids, keyspace, events_n, seed):
    """The sink's ``write_batch`` (native wire) on ``events_n`` events of the
    mix, after a warm-up as the simplest writes have; figures per event, as
    write_all's, ``wps`` being events/s."""
    sink = make_sink(entry(hosts, keyspace, Driver="native"), CassandraSink)
    await sink.start()
    try:
        warm = await warm_up(lambda i: write_all(sink, mix_events(2000, seed * 100 + i),
                                                 jvm_pids), jvm_pids)
        out = await write_all(sink, mix_events(events_n, seed), jvm_pids)
        out["wps"], out["warm_writes"] = out["eps"], 2000 * warm
        return out
    finally:
        await sink.close()


SINK_KIND = "the sink, per event"


def price_sink(name, rounds, c, per):
    """The sink's Cassandra CPU per event (median of ``rounds``) against the
    baselines ``per`` (µs per write by kind), four ways; ``c`` the census."""
    partitions, ours = median(rounds, "partitions"), median(rounds, "cassandra_us")
    product = partitions * per["insert"]
    print(f"  {name}: Cassandra CPU {ours:.0f} µs/event against {partitions:.2f} partitions "
          f"x {per['insert']:.1f} µs = {product:.0f} µs: {ours / product:.2f}x (target <= 1.5x)",
          flush=True)
    counters = f"{c['counter_partitions']:.2f} x {per['counter']:.1f}"
    counter_us = c["counter_partitions"] * per["counter"]
    for label, n, price, tail in (
            ("with counters priced as counters", c["row_partitions"], per["insert"],
             f"; per cell written {ours / sum(c['cells'].values()):.1f} µs"),
            ("with row partitions priced as the as-wide insert", c["row_partitions"],
             per["wide"], ""),
            ("with each row statement priced as the simplest insert", c["row_statements"],
             per["insert"], "")):
        total = n * price + counter_us
        print(f"    {label}: {n:.2f} x {price:.1f} + {counters} = {total:.0f} µs: "
              f"{ours / total:.2f}x{tail}", flush=True)


def limit_section(args, node, results):
    c = getattr(args, "census", None) or census(mix_events(args.events, 100))
    wide = row_width(c)
    print("\n== 2. the node's limit: the simplest single-row prepared insert, the simplest "
          f"counter increment, a single-row insert as wide as the plan's average row "
          f"partition ({wide[0]} cells of ~{wide[1]} bytes), and a single-partition batch of "
          f"simplest rows in as many tables as that partition's rows, same client, rounds "
          f"interleaved", flush=True)
    tables = max(2, round(c["row_statements"] / c["row_partitions"]))
    shapes = {"insert": {}, "counter": {"counter": True}, "wide": {"width": wide},
              f"batch of {tables} tables": {"tables": tables}}
    kinds = {kind: [] for kind in shapes}
    kinds[SINK_KIND] = []
    hosts, ks = [f"127.0.0.1:{node.native_port}"], f"bench_limit_{int(time.time())}"
    asyncio.run(make_sink(entry(hosts, ks, Driver="native"), CassandraSink).apply_schema())
    # A first round of every kind is run and dropped: after each call's own
    # warm-up the node still got cheaper from round to round (the first of
    # three dearest by up to 5x), which the interleaving alone spreads over
    # the kinds' medians. The sink runs in the same rounds: section 1 ran on a
    # younger node, so its figure is not comparable with these.
    for i in range(args.rounds + 1):
        for kind, rounds in kinds.items():
            if kind == SINK_KIND:
                out = asyncio.run(sink_writes(hosts, [node.pid], ks, args.events, 500 + i))
            else:
                out = asyncio.run(simplest_writes(
                    "127.0.0.1", node.native_port, [node.pid], args.events * 3, 128,
                    **shapes[kind]))
            if i:
                rounds.append(out)
    per = {kind: median(rounds, "cassandra_us") for kind, rounds in kinds.items()}
    for kind, rounds in kinds.items():
        print(f"  {kind}: {median(rounds, 'wps'):.0f} writes/s, {1e6 / per[kind]:.0f} writes per "
              f"Cassandra CPU-second ({per[kind]:.1f} µs of Cassandra CPU per write; client "
              f"{median(rounds, 'client_us'):.1f} µs; after {rounds[0]['warm_writes']} warm-up "
              f"writes; rounds " + " / ".join(f"{r['cassandra_us']:.1f}" for r in rounds)
              + " µs)", flush=True)
        print(f"    Cassandra CPU µs/write by thread, median round: "
              f"{median_round(rounds)['threads']}", flush=True)
    batch = per[f"batch of {tables} tables"]
    print(f"  against the simplest insert: the {wide[0]}-cell row {per['wide'] / per['insert']:.2f}x, "
          f"the batch of {tables} rows in {tables} tables {batch / per['insert']:.2f}x", flush=True)
    measured = {f"{driver} (section 1)": r for driver, r in results.items()}
    measured[SINK_KIND + " (these rounds)"] = kinds[SINK_KIND]
    for name, r in measured.items():
        if r and median(r, "partitions"):              # wave-1 counts no partitions
            price_sink(name, r, c, per)
    return per["insert"]


# ---------------------------------------------------------------- a running collector

def e2e_section(args, node):
    """Spool only against Cassandra, each with the collector's garbage
    collector settings (engine/system/gc_tuning.py), with CPython's defaults
    (TRACKER_GC=python) and, given ``--before``, as that checkout's
    collector; rounds interleaved."""
    from loadtest import cassandra_e2e
    variants = ["tuned", "acsylla", "python"] + (["before"] if args.before else [])
    print(f"\n== 3. a running collector: {args.e2e_requests} requests, spool only against "
          f"Cassandra (one HTTP worker, one store process, all on cpu 1; wrk and the JVM on "
          f"cpu 0): {', '.join(VARIANTS[v] for v in variants)}; {args.rounds} rounds "
          f"interleaved", flush=True)
    cassandra_e2e.pin_jvms([node.pid], "0")
    # the driver does not touch a spool-only run: "acsylla" is measured against "tuned"'s
    modes = [(store, v) for v in variants for store in ("spool", "cassandra")
             if not (v == "acsylla" and store == "spool")]
    runs = {mode: [] for mode in modes}
    try:
        for r in range(args.rounds):
            for store, v in modes if r % 2 == 0 else modes[::-1]:
                notify = []
                if store == "cassandra":
                    ks = f"bench_e2e_{r}_{v}_{int(time.time())}"
                    e = entry([f"127.0.0.1:{node.native_port}"], ks,
                              **({"Driver": "acsylla"} if v == "acsylla" else {}))
                    asyncio.run(make_sink(e).apply_schema())
                    notify = [e]
                runs[(store, v)].append(cassandra_e2e.one_run(
                    notify, args.e2e_requests, 17, [node.pid], store == "cassandra",
                    env={"TRACKER_GC": "python" if v == "python" else "tuned"},
                    command=args.before_command if v == "before" else None))
    finally:
        cassandra_e2e.pin_jvms([node.pid], "0-%d" % (os.cpu_count() - 1))

    def per_event(mode, key):
        return statistics.median(1e6 * x[key] / x["events"] for x in runs[mode])
    for mode in modes:
        print(f"  {mode[0]:9s} {mode[1]:6s} whole tree {per_event(mode, 'tree'):6.1f} µs/event, "
              f"store process {per_event(mode, 'store'):6.1f} µs/event, Cassandra "
              f"{per_event(mode, 'jvm'):6.1f} µs/event; "
              f"{statistics.median(x['events'] / x['seconds'] for x in runs[mode]):.0f} "
              f"events/s end to end (events: {[int(x['events']) for x in runs[mode]]})", flush=True)
    for v in variants:
        spool = ("spool", "tuned" if v == "acsylla" else v)
        sink = per_event(("cassandra", v), "tree") - per_event(spool, "tree")
        print(f"  the sink's CPU per event, {VARIANTS[v]} (difference of the whole trees): "
              f"{sink:.1f} µs (target <= 70)", flush=True)
    if args.before:
        # the store process alone, round by round: the whole trees' difference
        # also carries the spool-only runs' noise (a few µs between variants)
        diffs = [1e6 * (a["store"] / a["events"] - b["store"] / b["events"])
                 for a, b in zip(runs[("cassandra", "tuned")], runs[("cassandra", "before")])]
        print(f"  store process, this checkout - --before's, paired by round: median "
              f"{statistics.median(diffs):+.1f} µs/event (lower in {sum(d < 0 for d in diffs)} "
              f"of {len(diffs)} rounds)", flush=True)


VARIANTS = {"tuned": "this checkout", "acsylla": 'this checkout with Driver "acsylla"',
            "python": "this checkout with CPython's GC defaults",
            "before": "--before's checkout"}


# ---------------------------------------------------------------- 3 nodes

async def loss_run(hosts, keyspace, cluster, events, jvm_pids, kill_at, down_for, driver):
    """Write ``events`` as a store process would (a failed batch is retried
    whole after 0.1 s) while node 2 is killed at ``kill_at`` s and restarted
    ``down_for`` s later. Returns events/s before, during and after, and
    when the restarted node answered CQL."""
    sink = make_sink(entry(hosts, keyspace, Consistency="LOCAL_QUORUM", Driver=driver))
    await sink.start()
    loop = asyncio.get_running_loop()
    victim = cluster.nodes[1]
    marks, phase = {"up": 0, "down": 0, "back": 0}, "up"
    seconds = {"up": 0.0, "down": 0.0, "back": 0.0}
    retries, t0 = 0, time.monotonic()
    restart = killed = back_at = None
    try:
        for i in range(0, len(events), BATCH):
            batch = events[i:i + BATCH]
            started = time.monotonic()
            while True:
                try:
                    await sink.write_batch(batch)
                    break
                except Exception:          # noqa: BLE001 - the stage retries the same batch
                    retries += 1
                    await asyncio.sleep(0.1)
            now = time.monotonic()
            marks[phase] += len(batch)
            seconds[phase] += now - started
            if phase == "up" and now - t0 >= kill_at:
                victim.kill()
                killed, phase = now, "down"
            elif phase == "down" and now - killed >= down_for and restart is None:
                restart = loop.run_in_executor(None, victim.start)
            if restart is not None and restart.done() and phase == "down":
                restart.result()
                back_at, phase = time.monotonic(), "back"
        if phase == "down":
            if restart is None:
                restart = loop.run_in_executor(None, victim.start)
            await restart
            back_at = time.monotonic()
        elif phase == "up":
            raise SystemExit("the load ended before the node was killed: raise --loss-events")
    finally:
        await sink.close()
    rates = {k: marks[k] / seconds[k] for k in marks if seconds[k] > 0}
    return rates, marks, retries, back_at


def local_count(address, port, keyspace):
    """Events held by one node alone: read at ONE, coordinated by that node
    (dynamic snitch off, so it reads its own replica)."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]),
                               consistency_level=ConsistencyLevel.ONE, request_timeout=120)
    cluster = Cluster([address], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        s = cluster.connect()
        s.default_fetch_size = 5000
        return sum(1 for _ in s.execute(f"SELECT vid FROM {keyspace}.events"))
    finally:
        cluster.shutdown()


def cluster_section(args, one_node_rounds):
    driver = args.cluster_driver
    print(f"\n== 4. 3 nodes on 127.0.0.2-.4 (heap 1 GiB each, RF 3, LOCAL_QUORUM), {driver}",
          flush=True)
    directory = tempfile.mkdtemp(prefix="bench-cassandra-cluster-")
    cluster = cassandra_node.CassandraCluster(directory, 3, heap="1g")
    try:
        cluster.start()
        print(f"  3 nodes up in {cluster.start_seconds:.0f} s", flush=True)
        hosts = [f"{a}:{cluster.native_port}" for a in cluster.addresses]
        rf3 = {"Replication": {"class": "NetworkTopologyStrategy", "datacenter1": 3},
               "Consistency": "LOCAL_QUORUM"}
        ks = f"bench_rf3_{int(time.time())}"
        rounds = asyncio.run(driver_rounds(driver, hosts, cluster.pids(), args.events,
                                           args.rounds, ks, **rf3))
        report_driver("3 nodes", rounds, "(checked below)")
        if one_node_rounds:
            print(f"  1 node against 3: {median(one_node_rounds, 'eps'):.0f} against "
                  f"{median(rounds, 'eps'):.0f} events/s; Cassandra CPU "
                  f"{median(one_node_rounds, 'cassandra_us'):.0f} against "
                  f"{median(rounds, 'cassandra_us'):.0f} µs/event (all JVMs share 2 cores)",
                  flush=True)
        # ---- a node lost under load
        ks = f"bench_loss_{int(time.time())}"
        asyncio.run(make_sink(entry(hosts, ks, **rf3)).apply_schema())
        events = mix_events(args.loss_events, 7)
        rates, marks, retries, back_at = asyncio.run(loss_run(
            hosts, ks, cluster, events, cluster.pids(), args.kill_at, args.down_for, driver))
        print(f"  node 127.0.0.3 killed after {args.kill_at} s, restarted {args.down_for} s "
              f"later: events/s before {rates.get('up', 0):.0f}, while down "
              f"{rates.get('down', 0):.0f}, after {rates.get('back', 0):.0f} "
              f"(events {marks}, batches retried {retries})", flush=True)
        ok, text = check_stored(hosts, cluster.native_port, ks, len(events))
        print(f"  stored: {'OK' if ok else 'WRONG'}: {text}", flush=True)
        victim = cluster.nodes[1]
        while True:
            held = patiently(lambda: local_count(victim.address, cluster.native_port, ks))
            if held >= len(events) or time.monotonic() - back_at > 600:
                break
            time.sleep(1.0)
        print(f"  catch-up: the restarted node holds {held} of {len(events)} events "
              f"{time.monotonic() - back_at:.1f} s after it answered CQL", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------- main

def batch_warnings(directory):
    try:
        with open(os.path.join(directory, "logs", "system.log"), errors="replace") as fh:
            return sum("exceeding specified threshold" in line or
                       "Unlogged batch covering" in line for line in fh)
    except FileNotFoundError:
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=20000, help="events per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--drivers", default=",".join(DRIVERS))
    p.add_argument("--skip", default="", help="sections to leave out: drivers, limit, e2e, cluster")
    p.add_argument("--e2e-requests", type=int, default=20000)
    p.add_argument("--loss-events", type=int, default=60000)
    p.add_argument("--kill-at", type=float, default=5.0)
    p.add_argument("--down-for", type=float, default=10.0)
    p.add_argument("--heap", default="2g")
    p.add_argument("--warm-units", type=int, default=15,
                   help="at most this many warm-up units (2,000 events or writes) before "
                        "each measured workload, fewer once the JIT is quiet")
    p.add_argument("--engines", default="compatible",
                   help="sections 1-3 on a node of each storage engine, in turn "
                        f"({', '.join(cassandra_node.ENGINES)})")
    p.add_argument("--cluster-driver", default="native", choices=("native", "acsylla"),
                   help="the driver of section 4")
    p.add_argument("--before", help="section 3 also runs this checkout's collector "
                                    "(an earlier version with its own .venv)")
    # --worker: run one driver's rounds here and print JSON (a side venv)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hosts", help=argparse.SUPPRESS)
    p.add_argument("--pids", help=argparse.SUPPRESS)
    p.add_argument("--keyspace", help=argparse.SUPPRESS)
    args = p.parse_args()
    # checked now, not after a node has started
    args.before_command = [checkout_tracker(args.before)] if args.before else None
    from engine.system import gc_tuning
    gc_tuning.tune("store-bench")      # the sink runs as in a store process
    globals()["WARM_UNITS"] = max(1, args.warm_units)
    if args.worker:
        return worker_main(args)
    args.drivers = [d for d in args.drivers.split(",") if d]
    args.engines = [e for e in args.engines.split(",") if e]
    unknown = set(args.engines) - set(cassandra_node.ENGINES)
    if unknown:
        p.error(f"--engines: unknown {', '.join(sorted(unknown))}")
    skip = set(filter(None, args.skip.split(",")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a CI timeout still stops the nodes
    print(f"{os.cpu_count()} CPUs; Cassandra {cassandra_node.CASSANDRA_VERSION}", flush=True)
    results, engines = {}, {}
    for engine in args.engines:
        if not {"drivers", "limit", "e2e"} - skip:
            break
        results, engines[engine] = single_node_sections(args, skip, engine)
    if len(engines) > 1:
        report_engines(engines)
    if "cluster" not in skip:
        cluster_section(args, results.get(args.cluster_driver))


def single_node_sections(args, skip, engine):
    """Sections 1-3 on a node of storage ``engine`` (scripts/cassandra_node.py
    ENGINES); returns section 1's results and the per-write and per-event
    Cassandra CPU of sections 1-2."""
    node = cassandra_node.CassandraNode(tempfile.mkdtemp(prefix="bench-cassandra-"),
                                        heap=args.heap, engine=engine)
    node.start()
    print(f"\none node up in {node.start_seconds:.1f} s (heap {args.heap}, storage engine "
          f"{engine})", flush=True)
    results, per_write = {}, None
    try:
        if "drivers" not in skip:
            results = drivers_section(args, node)
        if "limit" not in skip:
            per_write = limit_section(args, node, results)
        if "e2e" not in skip:
            e2e_section(args, node)
    finally:
        node.stop()
        print(f"Cassandra's log: {batch_warnings(node.dir)} batch warnings", flush=True)
        shutil.rmtree(node.dir, ignore_errors=True)
    return results, {"per_write": per_write, "results": results}


def report_engines(engines):
    """Sections 1-2 side by side for each storage engine."""
    print("\n== storage engines: Cassandra CPU µs per event (section 1) and per simplest "
          "insert (section 2)", flush=True)
    for engine, got in engines.items():
        for driver, r in got["results"].items():
            if not r or not median(r, "partitions"):
                continue
            ours, per_write = median(r, "cassandra_us"), got["per_write"]
            ratio = (f"{ours / (median(r, 'partitions') * per_write):.2f}x the product"
                     if per_write else "no section 2")
            print(f"  {engine:10s} {driver:16s} {ours:7.0f} µs/event  {median(r, 'eps'):6.0f} "
                  f"events/s  simplest insert {per_write or 0:5.1f} µs  {ratio}", flush=True)


if __name__ == "__main__":
    main()
