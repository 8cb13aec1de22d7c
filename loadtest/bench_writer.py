"""The SQLite store's per-event stages in one process, without the collector
around them: decode, user agents, de-duplication and the batch writer.

    python loadtest/bench_writer.py [--events 200000] [--mix visitors|realistic]
        [--batch 20000] [--rounds 5] [--before DIR] [--segment N] [--spans A,B]

The records are loadtest/store_corpus.py's (made once, by this checkout).
Each round is a fresh process on cpu 1 that writes them, ``--batch`` at a
time as the store process's batches (engine/store/stage.py: decode, then
Agents.apply, then fanout.Batch(unique(...)), then the sink's
write_batch_sync) into a new SQLite file, and prints each stage's CPU
microseconds per event (``process_time``: the COMMIT's wait for the disk is
not counted). ``--before DIR``: a checkout of an earlier version with its own
``.venv``, run alternately with this one on the same records; medians and
the median of the paired differences are printed (the two run in turn, which
first alternating from round to round). ``--segment N``: also the
writer's µs per event for each N events written, in order (how the cost
grows with the file: ``--events 2000000 --segment 500000``). ``--spans
20000,100000``: this checkout once per value, each batch held in the open
transaction while the events held and its own stay under that many (as the
store's SinkChannel holds full batches: TransactionMaxEvents), the side
named after the value; the first value is the baseline of the paired
differences.

Not the collector: no event loop, no spool reading, no garbage-collector or
arena settings (bench_store.py --sections serve runs the store process whole).
"""
import argparse
import json
import os
import pickle
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = ("decode", "agents", "unique", "write")


def make_records(mix, n, path):
    sys.path.insert(0, os.path.dirname(HERE))
    from engine import _parse
    from loadtest import store_corpus
    records = list(store_corpus.MIXES[mix](n, random.Random(25), _parse.TimeUUIDGen(),
                                           1_795_000_000_000, 15000))
    with open(path, "wb") as fh:
        pickle.dump(records, fh)


def one_round(records_path, batch, segment=0, span=0):
    """In a checkout's own interpreter (cwd = the checkout): the stages' µs per event."""
    sys.path.insert(0, os.getcwd())
    from engine import _parse
    from engine.store.agents import Agents
    from engine.store.fanout import Batch, unique
    from engine.store.sinks.sqlite import SQLiteSink

    class Config:
        schema_version = 1

    with open(records_path, "rb") as fh:
        records = pickle.load(fh)
    directory = tempfile.mkdtemp()
    sink = SQLiteSink({"Service": "sqlite", "Path": os.path.join(directory, "t.db")}, Config())
    sink.start_sync()
    agents = Agents("keep")
    spent = dict.fromkeys(STAGES, 0.0)
    segments, segment_spent, segment_events = [], 0.0, 0
    held = 0
    clock = time.process_time
    for start in range(0, len(records), batch):
        t0 = clock()
        events = [_parse.decode(r) for r in records[start:start + batch]]
        t1 = clock()
        events = agents.apply(events)
        t2 = clock()
        events = Batch(unique(events))
        t3 = clock()
        if span:
            hold = held + len(events) < span
            sink.write_batch_sync(events, hold)
            held = held + len(events) if hold else 0
        else:
            sink.write_batch_sync(events)
        t4 = clock()
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[stage] += seconds
        segment_spent += t4 - t3
        segment_events += len(events)
        if segment and segment_events >= segment:
            segments.append(segment_spent * 1e6 / segment_events)
            segment_spent, segment_events = 0.0, 0
    if held:
        t3 = clock()
        sink.commit_sync()
        spent["write"] += clock() - t3
    sink.close_sync()
    figures = {k: v * 1e6 / len(records) for k, v in spent.items()}
    figures["total"] = sum(figures.values())
    if segment:
        figures["segments"] = segments
    print(json.dumps(figures))


def run_round(checkout, records_path, batch, segment, span=0):
    from bench_http import checkout_round
    extra = ("--span", str(span)) if span else ()
    return checkout_round(checkout, __file__, records_path, "--batch", str(batch),
                          "--segment", str(segment), *extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--mix", choices=("visitors", "realistic"), default="visitors")
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before", help="a checkout of an earlier version with its own .venv")
    ap.add_argument("--segment", type=int, default=0,
                    help="also print the writer's µs per event for each N events written")
    ap.add_argument("--spans", help="events per transaction to compare, e.g. 20000,100000")
    ap.add_argument("--span", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--round", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.round:
        return one_round(args.round, args.batch, args.segment, args.span)
    here = os.path.dirname(HERE)
    if args.spans:
        sides = {str(v): (here, int(v)) for v in args.spans.split(",")}
    else:
        sides = {"now": (here, 0)}
    if args.before:
        sides["before"] = (os.path.abspath(args.before), 0)
    with tempfile.TemporaryDirectory() as tmp:
        records = os.path.join(tmp, "records.pickle")
        make_records(args.mix, args.events, records)
        results = {side: [] for side in sides}
        for i in range(args.rounds):
            # Every other round runs the checkouts the other way round: the
            # second of two back-to-back runs may find the machine warmer.
            order = list(sides.items())
            for side, (checkout, span) in (order if i % 2 == 0 else order[::-1]):
                r = run_round(checkout, records, args.batch, args.segment, span)
                segments = r.pop("segments", None)
                results[side].append(r)
                print(f"round {i + 1} {side:6} " + "  ".join(
                    f"{k} {v:5.2f}" for k, v in r.items()), flush=True)
                if segments:
                    print(f"round {i + 1} {side:6} write per {args.segment} events: "
                          + " ".join(f"{v:5.2f}" for v in segments), flush=True)
    print(f"{args.mix} mix, {args.events} events in batches of {args.batch}, {args.rounds} "
          f"rounds; CPU µs per event, medians")
    for side, rows in results.items():
        print(f"{side:6} " + "  ".join(
            f"{k} {statistics.median(r[k] for r in rows):5.2f}" for k in rows[0]))
    names = list(sides)
    base = "before" if args.before else (names[0] if args.spans else None)
    for side in names:
        if base is None or side == base:
            continue
        for k in ("write", "total"):
            diffs = [a[k] - b[k] for a, b in zip(results[side], results[base])]
            lower = sum(d < 0 for d in diffs)
            print(f"{k}: {side} - {base}, median of paired differences "
                  f"{statistics.median(diffs):+.2f} (lower in {lower} of {len(diffs)} rounds)")


if __name__ == "__main__":
    main()
