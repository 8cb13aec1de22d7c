#!/usr/bin/env python3
"""The Cassandra sink against real nodes: drivers, the node's own limit, a
running collector, 1 node against 3, and a node lost under load.

    .venv/bin/python loadtest/bench_cassandra.py [--events 20000] [--rounds 3]
        [--drivers acsylla,native,cassandra-driver,scylla-driver,wave-1]
        [--skip drivers,limit,e2e,cluster] [--cluster-driver native|acsylla]
        [--before DIR]

Events are issue 17's mix, made by the compiled parser exactly as the
collector makes them from loadtest/cassandra_mix.lua's requests: 60 %
returning visitors (a `vid` cookie from a pool of 20,000), 50 pages, 20
referrers, lat/lon and score, no `first` (so every event is a first event),
one of 40 user agents. Sections, in one run:

1. drivers: the sink's ``write_batch`` in batches of 1,000 (BatchMaxEvents)
   with each driver on one node (heap ``--heap``): events/s, client CPU per
   event (this process, every thread), Cassandra CPU per event, statements,
   requests and partitions per event; then the stored rows and counters are
   read back and checked. scylla-driver installs the same ``cassandra``
   package as cassandra-driver, so it runs in a venv of its own (made once
   under ~/.cache/tracker), through this script's ``--worker`` mode.
2. the node's limit: the simplest single-row prepared insert from the same
   client (acsylla, same concurrency): writes/s and Cassandra CPU per write,
   and the sink's Cassandra CPU per event against (partitions per event) x
   (CPU per simplest write).
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
import json
import os
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
    cpu0, jvm0, t0 = time.process_time(), cpu_seconds(jvm_pids), time.perf_counter()
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
        await write_all(sink, mix_events(2000, 1), jvm_pids)          # warm-up
        return [await write_all(sink, mix_events(events_n, 100 + r), jvm_pids)
                for r in range(rounds)]
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
                           str(events_n), "--rounds", str(rounds), "--keyspace", keyspace],
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


def report_driver(name, rounds, check):
    print(f"  {name:17s} {median(rounds, 'eps'):7.0f} events/s  client CPU "
          f"{median(rounds, 'client_us'):6.0f} µs/event  Cassandra CPU "
          f"{median(rounds, 'cassandra_us'):6.0f} µs/event  {median(rounds, 'statements'):.2f} "
          f"statements, {median(rounds, 'requests'):.2f} requests, "
          f"{median(rounds, 'partitions'):.2f} partitions/event  "
          f"(rounds: {[round(r['eps']) for r in rounds]} events/s, batches retried "
          f"{sum(r.get('retries', 0) for r in rounds)})  stored: {check}", flush=True)


def drivers_section(args, node):
    print(f"\n== 1. drivers: the sink's write_batch, batches of {BATCH}, one node, "
          f"{args.events} events x {args.rounds} rounds", flush=True)
    hosts, pids = [f"127.0.0.1:{node.native_port}"], [node.pid]
    results = {}
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
        ok, text = check_stored(hosts, node.native_port, ks, args.events * args.rounds + 2000)
        report_driver(name, rounds, ("OK: " if ok else "WRONG: ") + text)
        results[driver] = rounds if ok else None
    good = {d: r for d, r in results.items() if r and d != "wave-1"}
    if good:
        best = min(good, key=lambda d: median(good[d], "client_us"))
        print(f"  cheapest per event with correct results: {best}", flush=True)
    return results


# ---------------------------------------------------------------- the node's limit

async def simplest_writes(host, port, jvm_pids, n, concurrency, rf=1):
    """The simplest single-row prepared insert, ``n`` times, acsylla, the
    sink's concurrency; per write: Cassandra CPU, client CPU; writes/s."""
    import acsylla
    cluster = acsylla.create_cluster([host], port=port, request_timeout=20, log_level="error",
                                     consistency=acsylla.Consistency.LOCAL_QUORUM)
    s = await cluster.create_session()
    ks = f"bench_simple_{int(time.time())}"
    await s.execute(acsylla.create_statement(
        f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', "
        f"'replication_factor': {rf}}}"))
    await s.execute(acsylla.create_statement(f"CREATE TABLE {ks}.kv (k uuid PRIMARY KEY, v text)"))
    insert = await s.create_prepared(f"INSERT INTO {ks}.kv (k, v) VALUES (?, ?)")
    keys = [str(uuid.uuid4()) for _ in range(n)]

    async def run(keys):
        pending = iter(keys)

        async def lane():
            for k in pending:
                st = insert.bind()
                st.bind_list([k, "x"])
                await s.execute(st)
        await asyncio.gather(*[lane() for _ in range(concurrency)])
    await run(keys[:2000])
    cpu0, jvm0, t0 = time.process_time(), cpu_seconds(jvm_pids), time.perf_counter()
    await run(keys)
    wall = time.perf_counter() - t0
    out = {"wps": n / wall, "cassandra_us": 1e6 * (cpu_seconds(jvm_pids) - jvm0) / n,
           "client_us": 1e6 * (time.process_time() - cpu0) / n}
    await s.close()
    return out


def limit_section(args, node, results):
    print("\n== 2. the node's limit: the simplest single-row prepared insert, same client",
          flush=True)
    rounds = [asyncio.run(simplest_writes("127.0.0.1", node.native_port, [node.pid],
                                          args.events * 3, 128)) for _ in range(args.rounds)]
    per_write = median(rounds, "cassandra_us")
    print(f"  {median(rounds, 'wps'):.0f} writes/s, {1e6 / per_write:.0f} writes per Cassandra "
          f"CPU-second ({per_write:.1f} µs of Cassandra CPU per write; client "
          f"{median(rounds, 'client_us'):.1f} µs)", flush=True)
    for driver, r in results.items():
        if not r or not median(r, "partitions"):       # wave-1 counts no partitions
            continue
        partitions, ours = median(r, "partitions"), median(r, "cassandra_us")
        product = partitions * per_write
        print(f"  {driver}: Cassandra CPU {ours:.0f} µs/event against {partitions:.2f} partitions "
              f"x {per_write:.1f} µs = {product:.0f} µs: {ours / product:.2f}x (target <= 1.5x)",
              flush=True)
    return per_write


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
    if args.worker:
        return worker_main(args)
    args.drivers = [d for d in args.drivers.split(",") if d]
    skip = set(filter(None, args.skip.split(",")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a CI timeout still stops the nodes
    print(f"{os.cpu_count()} CPUs; Cassandra {cassandra_node.CASSANDRA_VERSION}", flush=True)
    results = {}
    if {"drivers", "limit", "e2e"} - skip:
        node = cassandra_node.CassandraNode(tempfile.mkdtemp(prefix="bench-cassandra-"),
                                            heap=args.heap)
        node.start()
        print(f"one node up in {node.start_seconds:.1f} s (heap {args.heap})", flush=True)
        try:
            if "drivers" not in skip:
                results = drivers_section(args, node)
            if "limit" not in skip:
                limit_section(args, node, results)
            if "e2e" not in skip:
                e2e_section(args, node)
        finally:
            node.stop()
            print(f"Cassandra's log: {batch_warnings(node.dir)} batch warnings", flush=True)
            shutil.rmtree(node.dir, ignore_errors=True)
    if "cluster" not in skip:
        cluster_section(args, results.get(args.cluster_driver))


if __name__ == "__main__":
    main()
