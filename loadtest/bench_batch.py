"""Batches and the WebSocket against single requests, in one run.

    python loadtest/bench_batch.py [--duration 6] [--rounds 3] [--sizes 1,10,100]
        [--ws-frame 100] [--ws-connections 8]

One collector (`Notify: []`: ingest and spool alone, one HTTP worker pinned to
cpu 1; load on cpu 0) receives, in interleaved rounds:
- single tracked GETs (loadtest/visitors.lua, wrk -c64);
- POST /tr/v1/batch with JSON arrays of N generated events (loadtest/batch.lua,
  wrk -c64) for each N of --sizes;
- a WebSocket stream: --ws-connections sockets sending frames of --ws-frame
  events, each socket keeping up to 8 frames unacknowledged (an aiohttp
  client; one Python process drives it, so its events/s is a floor, not the
  server's ceiling).
Reported per kind (medians): events/s and the server's CPU per event (its
process tree from /proc, and cpu 1's whole non-idle time per event).
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loadtest.bench_http import free_port, parse_wrk, pin  # noqa: E402
from loadtest.bench_ingest import Collector, core_busy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def wrk(server, script, args, extra):
    cmd = pin("0") + ["wrk", "-t1", "-c64", f"-d{max(1, round(args.duration))}s", "-s",
                      os.path.join(HERE, script), server.base, "--"] + extra
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


async def socket_load(port, seconds, per_frame, connections, window=8):
    """Events acknowledged over ``seconds`` by ``connections`` sockets."""
    import aiohttp
    frame = json.dumps([{"ename": "ws", "m": "S", "url": "https://shop.example/p/1",
                         "uid": "u1", "score": 1}] * per_frame)
    acked = 0
    deadline = time.monotonic() + seconds

    async def one(session):
        nonlocal acked
        async with session.ws_connect(f"http://127.0.0.1:{port}/tr/v1/ws") as ws:
            outstanding = 0
            while time.monotonic() < deadline or outstanding:
                while outstanding < window and time.monotonic() < deadline:
                    await ws.send_str(frame)
                    outstanding += 1
                answer = json.loads((await ws.receive(timeout=30)).data)
                outstanding -= 1
                acked += answer.get("events", 0)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session) for _ in range(connections)))
    return acked


def measure(server, kind, args):
    cpu, busy, started = server.cpu(), core_busy(), time.monotonic()
    if kind == "single":
        events = wrk(server, "visitors.lua", args, ["tracker", "40", "S"])["requests"]
    elif kind.startswith("batch"):
        n = int(kind[5:])
        r = wrk(server, "batch.lua", args, [str(n), kind])
        events = (r["requests"] - r["non2xx"]) * n
    else:
        events = asyncio.run(socket_load(server.port, args.duration, args.ws_frame,
                                         args.ws_connections))
    seconds = time.monotonic() - started
    events = max(1, events)
    return {"events_per_s": events / seconds,
            "cpu_us_per_event": (server.cpu() - cpu) * 1e6 / events,
            "core_us_per_event": (core_busy() - busy) * 1e6 / events}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="1,10,100")
    ap.add_argument("--ws-frame", type=int, default=100)
    ap.add_argument("--ws-connections", type=int, default=8)
    args = ap.parse_args()
    kinds = ["single"] + [f"batch{n}" for n in args.sizes.split(",")] + ["websocket"]
    directory = tempfile.mkdtemp(prefix="tracker-batch-")
    server = Collector(directory, None, False,
                       os.path.join(os.path.dirname(sys.executable), "tracker"), False)
    runs = {k: [] for k in kinds}
    try:
        for r in range(args.rounds):
            for kind in kinds:
                runs[kind].append(measure(server, kind, args))
                print(f"round {r + 1} {kind:10} {runs[kind][-1]['events_per_s']:9.0f} events/s "
                      f"{runs[kind][-1]['cpu_us_per_event']:6.2f} us/event", flush=True)
    finally:
        code = server.stop()
    print(f"\none collector (Notify: [], one HTTP worker on cpu 1), {args.rounds} rounds x "
          f"{args.duration} s; medians")
    print(f"{'kind':10} {'events/s':>10} {'us/event':>9} {'core us/event':>14}")
    for kind in kinds:
        med = {k: statistics.median(r[k] for r in runs[kind]) for k in runs[kind][0]}
        print(f"{kind:10} {med['events_per_s']:10.0f} {med['cpu_us_per_event']:9.2f} "
              f"{med['core_us_per_event']:14.2f}")
    if code != 0:
        raise SystemExit(f"FAILED: collector exit code {code}")


if __name__ == "__main__":
    main()
