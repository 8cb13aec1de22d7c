#!/usr/bin/env python3
"""Events persisted per second into one local Cassandra node by the sink.

Starts a node with scripts/cassandra_node.py (or uses --port), applies the
schema into fresh keyspaces, and writes synthetic events (a realistic mix:
new and returning visitors, uid, ref, aff, outcome, lat/lon, url, last, user
agent) through ``CassandraSink.write_batch`` exactly as a worker does.
Reports, per batch size, per ``RowBatch`` (row writes per UNLOGGED batch
request; 1 = a request per statement) and per first-write mode (``timestamp``:
ordinary writes ordered by an inverted write timestamp; ``paxos``: INSERT IF
NOT EXISTS), the median events/s over the rounds, the statements and the
requests per event, and the CPU
seconds per 1000 events of this process (the collector side) and of the
Cassandra JVM.

    .venv/bin/python loadtest/bench_cassandra.py --events 20000 --rounds 3
"""
import argparse
import asyncio
import os
import random
import shutil
import signal
import itertools
import statistics
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import cassandra_node  # noqa: E402

from engine.config import config_from_dict  # noqa: E402
from engine.store.sinks.cassandra import CassandraSink  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_events(n, seed, first_share=0.3):
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    visitors = [str(uuid.uuid4()) for _ in range(max(1, n // 5))]
    events = []
    for i in range(n):
        first = rnd.random() < first_share
        vid = str(uuid.uuid4()) if first else rnd.choice(visitors)
        ev = {"eid": str(uuid.uuid1()), "vid": vid, "sid": vid, "created": now + i,
              "first": first, "ip": f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(256)}",
              "params": {"type": "a", "n": str(i)}, "url": f"https://site.example/p{rnd.randrange(50)}",
              "last": f"https://ref.example/{rnd.randrange(20)}",
              "browser": f"Mozilla/5.0 bench/{rnd.randrange(10)}", "bhash": str(rnd.randrange(10)),
              "ename": "view", "score": 1.0, "duration": rnd.randrange(100000),
              "country": "US", "tz": "America/Los_Angeles", "device": "Linux", "os": "Linux"}
        if first:
            ev["new_visitor"] = True
        if rnd.random() < 0.2:
            ev["uid"] = f"user{rnd.randrange(1000)}"
        if rnd.random() < 0.1:
            ev["ref"] = f"ref{rnd.randrange(100)}"
        if rnd.random() < 0.05:
            ev["aff"] = f"aff{rnd.randrange(10)}"
        if rnd.random() < 0.05:
            ev["outcome"], ev["sink"] = "won", "cw$"
        if rnd.random() < 0.3:
            ev["latlon"] = [round(rnd.uniform(-80, 80), 3), round(rnd.uniform(-170, 170), 3)]
        events.append(ev)
    return events


def sink_for(port, keyspace, mode, concurrency):
    cfg = config_from_dict({"TLS": "off", "SpoolDirectory": tempfile.mkdtemp(), "Notify": [
        {"Service": "cassandra", "Hosts": [f"127.0.0.1:{port}"], "Context": keyspace,
         "FirstWrite": mode, "Concurrency": concurrency, "Timeout": 20000}]})
    return CassandraSink(cfg.notify[0], cfg)


async def one_round(sink, events, batch, node_pid):
    sent0, requests0 = sink.statements_sent, sink.requests_sent
    cpu0, jvm0 = time.process_time(), cpu_seconds(node_pid)
    t0 = time.perf_counter()
    for i in range(0, len(events), batch):
        await sink.write_batch(events[i:i + batch])
    wall = time.perf_counter() - t0
    cpu, jvm = time.process_time() - cpu0, cpu_seconds(node_pid) - jvm0
    return {"eps": len(events) / wall, "stmts": (sink.statements_sent - sent0) / len(events),
            "requests": (sink.requests_sent - requests0) / len(events),
            "client_cpu_ms": 1e6 * cpu / len(events),    # CPU ms per 1000 events
            "node_cpu_ms": 1e6 * jvm / len(events)}


async def bench(args, port, node_pid):
    results = []
    for mode in args.modes:
        ks = f"bench_{mode}_{int(time.time())}"
        sink = sink_for(port, ks, mode, args.concurrency)
        await sink.apply_schema()
        sink = sink_for(port, ks, mode, args.concurrency)
        await sink.start()
        try:
            await one_round(sink, make_events(min(2000, args.events), 99), 500, node_pid)  # warm-up
            for batch, row_batch in itertools.product(args.batch_sizes, args.row_batches):
                sink.row_batch = row_batch
                rounds = []
                for r in range(args.rounds):
                    events = make_events(args.events, hash((mode, batch, r)) & 0xffff)
                    rounds.append(await one_round(sink, events, batch, node_pid))
                med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
                results.append((mode, batch, row_batch, med, [round(x["eps"]) for x in rounds]))
                print(f"first-write={mode:9s} batch={batch:5d} RowBatch={row_batch:2d}  "
                      f"{med['eps']:8.0f} events/s (rounds {[round(x['eps']) for x in rounds]})  "
                      f"{med['stmts']:.2f} statements, {med['requests']:.2f} requests/event  "
                      f"CPU per 1000 events: "
                      f"collector {med['client_cpu_ms']:.0f} ms, cassandra "
                      f"{med['node_cpu_ms']:.0f} ms", flush=True)
        finally:
            await sink.close()
    return results


async def first_write_only(args, port, node_pid):
    """The first-write-wins tables alone: every event is a first event of a new
    visitor with a ref, so each writes visitors, sessions and referrals."""
    for mode in args.modes:
        ks = f"bench_fw_{mode}_{int(time.time())}"
        await sink_for(port, ks, mode, args.concurrency).apply_schema()
        sink = sink_for(port, ks, mode, args.concurrency)
        await sink.start()
        try:
            rounds = []
            for r in range(args.rounds):
                events = make_events(args.events, r + 7, first_share=1.0)
                for ev in events:
                    ev["ref"] = "r"
                rounds.append(await one_round(sink, events, 1000, node_pid))
            eps = statistics.median(x["eps"] for x in rounds)
            jvm = statistics.median(x["node_cpu_ms"] for x in rounds)
            print(f"first events only, first-write={mode:9s} {eps:8.0f} events/s, cassandra CPU "
                  f"{jvm:.0f} ms per 1000 events (rounds {[round(x['eps']) for x in rounds]})",
                  flush=True)
        finally:
            await sink.close()


def batch_warnings(directory):
    """Batches Cassandra logged as over batch_size_warn_threshold or as
    covering too many partitions (the sink sizes batches to stay under both)."""
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
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--modes", nargs="+", default=["timestamp", "paxos"])
    p.add_argument("--row-batches", type=int, nargs="+", default=[1, 8],
                   help="RowBatch values: row writes per UNLOGGED batch request")
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--port", type=int, help="use a running node on 127.0.0.1:PORT")
    p.add_argument("--pid", type=int, help="its JVM pid (for the CPU split)")
    p.add_argument("--heap", default="2g")
    args = p.parse_args()
    # SIGTERM (a CI timeout) must still stop the node below, not orphan it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    node = None
    port, pid = args.port, args.pid
    if port is None:
        node = cassandra_node.CassandraNode(tempfile.mkdtemp(prefix="bench-cassandra-"),
                                            heap=args.heap)
        node.start()
        port, pid = node.native_port, node.pid
        print(f"cassandra {cassandra_node.CASSANDRA_VERSION} node up in "
              f"{node.start_seconds:.1f} s (heap {args.heap})", flush=True)
    try:
        print(f"{os.cpu_count()} CPUs; {args.events} events per round, median of "
              f"{args.rounds}; one sink (one worker), concurrency {args.concurrency}", flush=True)
        asyncio.run(bench(args, port, pid))
        asyncio.run(first_write_only(args, port, pid))
    finally:
        if node is not None:
            node.stop()
            warnings = batch_warnings(node.dir)
            print(f"Cassandra's log: {warnings} batch-size warnings", flush=True)
            shutil.rmtree(node.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
