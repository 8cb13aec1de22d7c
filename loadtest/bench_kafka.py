"""Kafka benchmark: which client, the sink, the repeater.

Starts one local Kafka broker (scripts/kafka_node.py: KRaft, loopback, free
ports) and measures, in the same run:

1. client comparison: confluent-kafka (librdkafka; produce the batch, then
   ``flush`` in an executor thread, as the sink does) against aiokafka (pure
   asyncio; ``send`` every message, then await the batch's futures). Both get
   the same events (JSON-encoded in the timed loop, key = vid, header eid),
   the same producer settings (idempotent, acks=all, linger 5 ms, 1 MiB
   batches, --compression) and the same batch size; rounds alternate the
   clients and medians are quoted. Figures: events/s acknowledged by the
   broker, client CPU per event (this process's CPU time, the client's own
   threads included) and broker CPU per event.
2. the sink alone: ``KafkaSink.write_batch`` (its defaults: lz4) in batches
   of --batch: events/s.
3. the repeater: ``tracker repeat`` from a JetStream subject to a topic and
   back, --repeat messages each way (a local nats-server): messages/s from
   start to the last one arrived.

    python loadtest/bench_kafka.py [--events 100000] [--batch 1000] [--rounds 3]
"""
import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import kafka_node  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def sample_events(n):
    base = int(time.time() * 1000)
    vids = [str(uuid.uuid4()) for _ in range(64)]
    return [{"eid": str(uuid.uuid1()), "vid": vids[i % 64], "sid": vids[i % 64],
             "created": base + i, "first": i < 64, "ip": "127.0.0.1",
             "url": "https://example.com/page", "ename": "view", "score": 1.0,
             "latlon": [37.2, 6.3], "browser": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
             "params": {"type": "a", "ref": "Bespoke"}} for i in range(n)]


def process_cpu(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def create_topic(bootstrap, name, partitions=3):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1)])
    futures[name].result(30)


# ---- 1. the two clients ---------------------------------------------------
async def run_confluent(bootstrap, topic, events, batch, compression):
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5, "batch.size": 1 << 20,
                         "compression.type": compression,
                         "queue.buffering.max.messages": max(2 * batch, 10000)})
    loop = asyncio.get_running_loop()
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    dumps = orjson.dumps
    produce = producer.produce
    await loop.run_in_executor(None, producer.list_topics, topic, 30)   # connected
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(events), batch):
        for ev in events[i:i + batch]:
            produce(topic, dumps(ev), ev["vid"].encode(), headers=[("eid", ev["eid"].encode())],
                    on_delivery=delivered)
        left = await loop.run_in_executor(None, producer.flush, 30)
        if left or failed:
            raise RuntimeError(f"confluent-kafka: {left} undelivered, errors {failed[:3]}")
    return time.perf_counter() - started, time.process_time() - cpu


async def run_aiokafka(bootstrap, topic, events, batch, compression):
    from aiokafka import AIOKafkaProducer
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                acks="all", linger_ms=5, max_batch_size=1 << 20,
                                compression_type=None if compression == "none" else compression)
    await producer.start()
    try:
        dumps = orjson.dumps
        send = producer.send
        await producer.partitions_for(topic)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(events), batch):
            futures = [await send(topic, dumps(ev), ev["vid"].encode(),
                                  headers=[("eid", ev["eid"].encode())])
                       for ev in events[i:i + batch]]
            await asyncio.gather(*futures)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await producer.stop()


CLIENTS = {"confluent-kafka": run_confluent, "aiokafka": run_aiokafka}


async def compare_clients(broker, events, batch, rounds, compression):
    create_topic(broker.host, "bench.compare")
    found = {name: [] for name in CLIENTS}
    for r in range(rounds):
        order = list(CLIENTS) if r % 2 == 0 else list(reversed(CLIENTS))
        for name in order:
            broker_cpu = process_cpu(broker.pid)
            wall, cpu = await CLIENTS[name](broker.host, "bench.compare", events, batch,
                                            compression)
            broker_cpu = process_cpu(broker.pid) - broker_cpu
            found[name].append((len(events) / wall, cpu / len(events) * 1e6,
                                broker_cpu / len(events) * 1e6))
    print(f"client comparison: {len(events)} events a run, batches of {batch}, "
          f"compression {compression}, idempotent, acks=all, {rounds} rounds (medians)")
    for name, runs in found.items():
        rate = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        bcpu = statistics.median(r[2] for r in runs)
        print(f"  {name:16s} {rate:10,.0f} events/s  client CPU {cpu:6.1f} us/event  "
              f"broker CPU {bcpu:5.1f} us/event   (runs: "
              + ", ".join(f"{r[0]:,.0f}/s {r[1]:.1f} us" for r in runs) + ")")
    return found


# ---- 2. the sink -----------------------------------------------------------
async def bench_sink(broker, events, batch):
    from engine.config import config_from_dict
    from engine.store.sinks.kafka import KafkaSink
    cfg = config_from_dict({"Notify": [{"Service": "kafka", "Hosts": [broker.host],
                                        "Topic": "bench.sink", "Partitions": 3}]})
    sink = KafkaSink(cfg.notify[0], cfg)
    await sink.start()
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(events), batch):
            await sink.write_batch(events[i:i + batch])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await sink.close()
    print(f"sink alone (KafkaSink.write_batch, compression {sink.opts.compression}): "
          f"{len(events) / wall:,.0f} events/s, {cpu / len(events) * 1e6:.1f} us CPU/event "
          f"({len(events)} events, batches of {batch})")


# ---- 3. the repeater -------------------------------------------------------
def tracker_command():
    exe = shutil.which("tracker", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "engine.cli"]


async def bench_repeat(broker, directory, messages):
    import nats
    nats_port = kafka_node.free_port()
    conf = os.path.join(directory, "nats.conf")
    with open(conf, "w") as fh:
        fh.write(f"listen: 127.0.0.1:{nats_port}\njetstream {{ store_dir: \"{directory}/js\" }}\n")
    server = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-c", conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nc = None
    try:
        async def quiet(_exc):       # the server is still starting: retried below
            pass
        deadline = time.monotonic() + 10
        while True:
            try:
                nc = await nats.connect(f"nats://127.0.0.1:{nats_port}", error_cb=quiet,
                                        allow_reconnect=False)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        js = nc.jetstream()
        await js.add_stream(name="BENCHIN", subjects=["bench.in"])
        await js.add_stream(name="BENCHBACK", subjects=["bench.back"])
        events = sample_events(messages)
        futures = [await js.publish_async("bench.in", orjson.dumps(ev),
                                          headers={"Nats-Msg-Id": ev["eid"]}) for ev in events]
        await asyncio.gather(*futures)
        common = ["--nats-hosts", f"127.0.0.1:{nats_port}", "--kafka-hosts", broker.host]
        # NATS -> Kafka
        started = time.perf_counter()
        proc = subprocess.Popen(tracker_command() + ["repeat", "--from", "nats:bench.in",
                                                     "--to", "kafka:bench.out", *common,
                                                     "--partitions", "3",
                                                     "--stop-when-idle", "1"])
        seen = await asyncio.get_running_loop().run_in_executor(
            None, count_topic, broker.host, "bench.out", messages, 120,
            lambda: proc.poll() in (None, 0))
        to_kafka = time.perf_counter() - started
        proc.wait(60)
        # Kafka -> NATS
        started = time.perf_counter()
        proc = subprocess.Popen(tracker_command() + ["repeat", "--from", "kafka:bench.out",
                                                     "--to", "nats:bench.back", *common,
                                                     "--stop-when-idle", "1"])
        back = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            back = (await js.stream_info("BENCHBACK")).state.messages
            if back >= messages or proc.poll() not in (None, 0):
                break
            await asyncio.sleep(0.05)
        to_nats = time.perf_counter() - started
        proc.wait(60)
        print(f"repeat nats -> kafka: {seen} of {messages} messages in {to_kafka:.2f} s = "
              f"{messages / to_kafka:,.0f} messages/s (process start included)")
        print(f"repeat kafka -> nats: {back} of {messages} messages in {to_nats:.2f} s = "
              f"{messages / to_nats:,.0f} messages/s (process start included)")
        return seen >= messages and back >= messages
    finally:
        if nc is not None:
            await nc.close()
        server.terminate()
        server.wait(10)


def count_topic(bootstrap, topic, expected, timeout, going):
    """Distinct eids read from ``topic`` until ``expected``, ``timeout`` s, or
    ``going()`` is false (the repeater failed)."""
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    eids = set()
    deadline = time.monotonic() + timeout
    try:
        while len(eids) < expected and time.monotonic() < deadline and going():
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    eids.add(dict(msg.headers() or []).get("eid"))
    finally:
        consumer.close()
    return len(eids)


async def main(args):
    directory = tempfile.mkdtemp(prefix="bench-kafka-")
    cluster = kafka_node.KafkaCluster(os.path.join(directory, "kafka"), size=1,
                                      heap=args.heap).start()
    broker = cluster.nodes[0]
    print(f"kafka {kafka_node.KAFKA_VERSION} broker up in {cluster.start_seconds:.1f} s "
          f"(1 node, heap {args.heap}); {os.cpu_count()} CPUs shared by broker and client")
    ok = True
    try:
        events = sample_events(args.events)
        await compare_clients(broker, events, args.batch, args.rounds, args.compression)
        await bench_sink(broker, events, args.batch)
        if args.repeat:
            ok = await bench_repeat(broker, directory, args.repeat)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"benchmark process peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    finally:
        cluster.stop(kill=True)
        shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=100000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compression", default="none", choices=("none", "gzip"),
                   help="codecs both clients have without extra packages")
    p.add_argument("--repeat", type=int, default=20000,
                   help="messages each way through `tracker repeat` (0: skip)")
    p.add_argument("--heap", default="512m", help="broker JVM heap")
    sys.exit(asyncio.run(main(p.parse_args())))
