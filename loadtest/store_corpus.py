"""Spool files of generated traffic, for loadtest/bench_store.py.

Records are made by the compiled encoder (engine._parse.encode_track) from
request parts, as an HTTP worker makes them, and written by a SpoolWriter:
a store reads them exactly as it reads a worker's spool.

- ``realistic``: issue 25's mix, loadtest/visitors.lua with every request a
  new visitor with its own uid: one of 500 pages, 50 referral codes, lat/lon,
  a score, one of 40 user agents.
- ``visitors``: loadtest/visitors.lua's mix (bench_ingest.py's traffic): 40 %
  new visitors, 60 % returning with a cookie from a pool of 20,000.
- ``reports``: visits that give every report kind something to find: a first
  page view (new visitor; 60 % with a referral code, a fifth of those the vid
  of an earlier visitor: the referral loop; 30 % with a UTM campaign; 30 % in
  one of 3 experiments, split A/B), then, in the same session, cart (50 %),
  checkout (half of those) and buy with an outcome (half of those).
"""
import os
import random
import types
import uuid as _uuid

from engine import _parse
from engine.spool import SpoolWriter

PAGE = b"https%3A%2F%2Fshop.example%2Fp%2F"
GROUP = 5000        # records per write_group, as a busy worker's group commit


def _agent(i):
    return b"Mozilla/5.0 (X11; Linux x86_64) bench/%d" % (i % 40)


def realistic(n, rnd, ids, now_ms, rate):
    """(record) of ``n`` requests, ``rate`` per second of created time."""
    for i in range(n):
        path = (b"/tr/v1/ename/view/m/S.%d/uid/uS.%d/url/%s%d/ref/r%d/lat/%.4f/lon/%.4f/score/%d"
                % (i, i, PAGE, rnd.randint(1, 500), rnd.randint(1, 50),
                   rnd.random() * 120 - 60, rnd.random() * 300 - 150, rnd.randint(0, 9)))
        yield _parse.encode_track(path, None, None, "127.0.0.1", _agent(i), None, None,
                                  now_ms + int(i * 1000 / rate), ids)


def visitors(n, rnd, ids, now_ms, rate):
    """(record) of ``n`` requests as loadtest/visitors.lua makes them (what
    bench_ingest.py sends): 40 % new visitors, the others returning with a
    ``vid`` cookie from a pool of 20,000 (uid and user agent per visitor)."""
    pool = [str(_uuid.UUID(int=rnd.getrandbits(128), version=4)).encode()
            for _ in range(20_000)]
    for i in range(n):
        visitor = rnd.randint(1, len(pool))
        path = (b"/tr/v1/ename/view/m/V.%d/uid/u%d/url/%s%d/ref/r%d/lat/%.4f/lon/%.4f/score/%d"
                % (i, visitor, PAGE, rnd.randint(1, 500), rnd.randint(1, 50),
                   rnd.random() * 120 - 60, rnd.random() * 300 - 150, rnd.randint(0, 9)))
        cookie = pool[visitor - 1] if rnd.randint(1, 100) > 40 else None
        yield _parse.encode_track(path, None, None, "127.0.0.1", _agent(visitor), None, cookie,
                                  now_ms + int(i * 1000 / rate), ids)


def reports(n, rnd, ids, now_ms, rate):
    """(record) of about ``n`` events of the report mix."""
    made, visitor, earlier = 0, 0, []
    while made < n:
        created = now_ms + int(made * 1000 / rate)
        visitor += 1
        first, extra = _first_visit(visitor, rnd, earlier)
        record = _parse.encode_track(first, None, None, "127.0.0.1", _agent(visitor), None,
                                     None, created, ids)
        made += 1
        yield record
        event = _parse.decode(record)
        if len(earlier) < 5000:
            earlier.append(event["vid"])
        elif rnd.random() < 0.01:
            earlier[rnd.randrange(5000)] = event["vid"]
        for step, name in enumerate((b"cart", b"checkout", b"buy")):
            if rnd.random() >= 0.5 or made >= n:
                break
            path = b"/tr/v1/ename/%s/sid/%s/url/%s%d%s" % (
                name, event["sid"].encode(), PAGE, rnd.randint(1, 500), extra)
            if name == b"buy":
                path += b"/outcome/purchase"
            made += 1
            yield _parse.encode_track(path, None, None, "127.0.0.1", _agent(visitor), None,
                                      event["vid"].encode(), created + 1000 * (step + 1), ids)


def _first_visit(i, rnd, earlier):
    """(path, what later events of the visit repeat)."""
    path = b"/tr/v1/ename/view/uid/uR.%d/url/%s%d/lat/%.4f/lon/%.4f" % (
        i, PAGE, rnd.randint(1, 500), rnd.random() * 120 - 60, rnd.random() * 300 - 150)
    extra = b""
    if rnd.random() < 0.6:
        ref = (rnd.choice(earlier).encode() if earlier and rnd.random() < 0.2
               else b"r%d" % rnd.randint(1, 50))
        path += b"/ref/" + ref
    if rnd.random() < 0.3:
        path += b"/utm_source/s%d/utm_medium/m%d/utm_campaign/c%d" % (
            rnd.randint(1, 5), rnd.randint(1, 3), rnd.randint(1, 10))
    if rnd.random() < 0.3:
        extra = b"/xid/x%d/split/%s" % (rnd.randint(1, 3), rnd.choice((b"A", b"B")))
        path += extra
    return path, extra


MIXES = {"realistic": realistic, "visitors": visitors, "reports": reports}


def write_spool(directory, mix, n, seed=25, now_ms=None, rate=15000):
    """Write about ``n`` records of ``mix`` as orphan spool files in
    ``directory``; return how many."""
    os.makedirs(directory, exist_ok=True)
    rnd = random.Random(seed)
    ids = _parse.TimeUUIDGen()
    writer = SpoolWriter(directory, 1 << 40, durable=False)
    count = 0
    for record in MIXES[mix](n, rnd, ids, now_ms or 1_795_000_000_000, rate):
        writer.append(record)
        count += 1
        if count % GROUP == 0:
            _, data, _ = writer.take_group()
            writer.write_group(data)
    if writer.pending:
        _, data, _ = writer.take_group()
        writer.write_group(data)
    writer.close()
    return count


def sqlite_sink(path, batch):
    """The store's SQLite sink on ``path``, started, for ``batch``-event batches."""
    from engine.store.sinks.sqlite import SQLiteSink
    sink = SQLiteSink({"Service": "sqlite", "Path": path},
                      types.SimpleNamespace(schema_version=1, batch_max_events=batch))
    sink.start_sync()
    return sink


def store_stage_prepare(bots="keep"):
    """What a store stage does to a batch of decoded events before its sink
    (engine/store/stage.py: user agents read, robots flagged, de-duplicated)."""
    from engine.store.agents import Agents
    from engine.store.fanout import Batch, unique
    agents = Agents(bots)
    return lambda events: Batch(unique(agents.apply(events)))


def fill_sqlite(path, records, batch, prepare=None):
    """Decode ``records`` and write them into the SQLite file ``path`` through
    the store's sink, ``batch`` at a time (``prepare``: what a store stage
    does to a batch before the sink, if anything: store_stage_prepare());
    return how many were new."""
    sink = sqlite_sink(path, batch)
    events, written = [], 0
    for record in records:
        events.append(_parse.decode(record))
        if len(events) == batch:
            written += sink.write_batch_sync(prepare(events) if prepare else events)
            events = []
    if events:
        written += sink.write_batch_sync(prepare(events) if prepare else events)
    sink.close_sync()
    return written
