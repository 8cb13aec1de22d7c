"""NATS benchmark: events published per second, messages consumed and written per second.

Starts a local nats-server (loopback, free ports) and measures:

1. publish, sink alone: ``NatsSink.write_batch`` with realistic events in
   batches of --batch, core NATS (flush per batch) and JetStream (acks per
   batch, stream on file storage): events/s acknowledged by the server.
2. publish, end to end: a real ``tracker serve`` (Notify = nats only) fed
   over HTTP by wrk with --connections keep-alive connections (threads of
   http.client when wrk is missing: then the client is the limit); a
   subscriber counts what arrives: events/s from the collector to nats-server.
3. consume: a real ``tracker serve`` with Consume + SQLite; --messages
   messages (log/count/update mix) are published as fast as possible and the
   time until all are in SQLite gives messages consumed and written per second.

    python loadtest/bench_nats.py [--events 50000] [--messages 50000] [--seconds 5]
"""
import argparse
import asyncio
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import nats

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_http import run_wrk  # noqa: E402
from engine.config import config_from_dict  # noqa: E402
from engine.store.sinks.nats import NatsSink  # noqa: E402


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(self, directory):
        self.port = free_port()
        conf = os.path.join(directory, "nats.conf")
        with open(conf, "w") as fh:
            fh.write(f"listen: 127.0.0.1:{self.port}\n"
                     f'jetstream {{ store_dir: "{directory}/js" }}\n')
        self.proc = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server",
                                      "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def wait_port(port, timeout=10):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def sample_events(n):
    base = int(time.time() * 1000)
    vid = str(uuid.uuid4())
    return [{"eid": str(uuid.uuid1()), "vid": vid, "sid": vid, "created": base + i,
             "first": i == 0, "ip": "127.0.0.1", "url": "https://example.com/page",
             "ename": "view", "score": 1.0, "latlon": [37.2, 6.3],
             "browser": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
             "params": {"type": "a", "ref": "Bespoke"}} for i in range(n)]


async def bench_sink(server, events, batch, jetstream):
    entry = {"Service": "nats", "Hosts": [server.url], "Context": "bench.sink",
             "JetStream": jetstream}
    if jetstream:
        entry["Stream"] = "BENCH"
    cfg = config_from_dict({"Notify": [entry]})
    sink = NatsSink(cfg.notify[0], cfg)
    await sink.start()
    data = sample_events(events)
    started = time.perf_counter()
    for i in range(0, events, batch):
        await sink.write_batch(data[i:i + batch])
    elapsed = time.perf_counter() - started
    await sink.close()
    return events / elapsed


def tracker_command():
    found = shutil.which("tracker", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "engine.cli"]


class Tracker:
    def __init__(self, directory, config, workers=1):
        self.port = free_port()
        path = os.path.join(directory, "config.json")
        config = {"TLS": "off", "LogLevel": "warning", "BatchMaxAgeMs": 50, **config}
        with open(path, "w") as fh:
            json.dump(config, fh)
        self.log = open(os.path.join(directory, "tracker.log"), "ab")
        self.proc = subprocess.Popen(tracker_command() + [
            "serve", "--config", path, "--workers", str(workers),
            "--listen", f"127.0.0.1:{self.port}"], stdout=self.log, stderr=self.log)
        wait_port(self.port, 20)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def http_load(port, seconds, connections):
    """Keep-alive GETs on the tracked route from threads; returns 200s answered."""
    done = [0] * connections
    stop = time.monotonic() + seconds

    def run(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop:
            conn.request("GET", f"/tr/v1/ename/bench/n/{i}")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                done[i] += 1
        conn.close()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


async def bench_end_to_end(server, directory, seconds, connections):
    nc = await nats.connect(server.url)
    count = 0
    first = last = None

    async def cb(msg):
        nonlocal count, first, last
        count += 1
        last = time.perf_counter()
        if first is None:
            first = last
    await nc.subscribe("bench.e2e", cb=cb)
    await nc.flush()
    tracker = Tracker(directory, {"Notify": [{"Service": "nats", "Hosts": [server.url],
                                              "Context": "bench.e2e", "Critical": True}]})
    try:
        if shutil.which("wrk"):
            result = await asyncio.to_thread(run_wrk, tracker.port, "/tr/v1/ename/bench",
                                             seconds, connections)
            answered = result["requests"] - result["non2xx"]
        else:   # threads of http.client: the client, not the collector, is the limit
            answered = await asyncio.to_thread(http_load, tracker.port, seconds, connections)
        deadline = time.monotonic() + 20
        while count < answered and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        tracker.stop()
    await nc.close()
    span = (last - first) if first and last and last > first else seconds
    return answered, count, count / span


async def bench_consume(server, directory, messages):
    db = os.path.join(directory, "consume.db")
    tracker = Tracker(directory, {"Notify": [{"Service": "sqlite", "Path": db}],
                                  "Consume": [{"Service": "nats", "Hosts": [server.url],
                                               "MessageLimit": 1_000_000,
                                               "BytesLimit": 512 * 1024 * 1024}]})
    nc = await nats.connect(server.url)
    try:
        # wait for the consumer's subscriptions (queue group "tracker")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(db):
                with sqlite3.connect(db) as conn:
                    if conn.execute("SELECT name FROM sqlite_master WHERE name='logs'").fetchone():
                        break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)   # consumer connected and subscribed after the schema
        logs = counts = updates = 0
        started = time.perf_counter()
        for i in range(messages):
            kind = i % 3
            if kind == 0:
                await nc.publish("tic.log.bench", b'{"name":"bench","level":2,"msg":"m %d"}' % i)
                logs += 1
            elif kind == 1:
                await nc.publish("tic.count.bench", b'{"id":"bench"}')
                counts += 1
            else:
                await nc.publish("tic.update.bench", b'{"id":"u%d","msg":"v"}' % (i % 1000))
                updates += 1
        await nc.flush()
        published = time.perf_counter() - started
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as conn:
                n_logs = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
                total = (conn.execute("SELECT total FROM counters WHERE id='bench'")
                         .fetchone() or (0,))[0]
            if n_logs >= logs and total >= counts:
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        await nc.close()
        tracker.stop()
    return messages, published, elapsed, n_logs, total, logs, counts


async def main(args):
    directory = tempfile.mkdtemp(prefix="bench-nats-")
    server = NatsServer(directory)
    try:
        for jetstream in (False, True):
            rate = await bench_sink(server, args.events, args.batch, jetstream)
            mode = "JetStream (acked)" if jetstream else "core (flushed)"
            print(f"sink publish, {mode:18s}: {rate:10,.0f} events/s "
                  f"({args.events} events, batches of {args.batch})")
        answered, received, rate = await bench_end_to_end(
            server, directory, args.seconds, args.connections)
        client = "wrk" if shutil.which("wrk") else "http.client threads: client-bound"
        print(f"end to end, tracker serve -> nats: {answered} events answered 200, "
              f"{received} received by a subscriber, {rate:,.0f} events/s published "
              f"(1 worker, {args.connections} HTTP connections, {client})")
        # wrk stops counting at its deadline with up to one request per
        # connection in flight: answered (and published) but not counted
        e2e_ok = answered <= received <= answered + args.connections
        if not e2e_ok:
            print(f"  MISMATCH: {answered} answered, {received} received")
        n, published, elapsed, n_logs, total, logs, counts = await bench_consume(
            server, directory, args.messages)
        ok = n_logs == logs and total == counts
        print(f"consume: {n} messages published in {published:.2f} s; consumed and written "
              f"to SQLite in {elapsed:.2f} s = {n / elapsed:,.0f} messages/s "
              f"({'all stored' if ok else f'INCOMPLETE: logs {n_logs}/{logs}, count {total}/{counts} (slow-consumer drops?)'})")
        return 0 if ok and e2e_ok else 1
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=50000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--messages", type=int, default=50000)
    sys.exit(asyncio.run(main(p.parse_args())))
