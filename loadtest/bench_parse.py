"""Micro-benchmark: a tracked request into its spool record, compiled
(engine._parse) vs reference (engine.parse_ref).

    .venv/bin/python loadtest/bench_parse.py [--rounds 7] [--seconds 0.3]

Two requests: a GET tuplet path (the DESIGN.md §2 example plus a query with
UTM keys and typical browser headers), and a JSON POST with the DESIGN.md §2
body. The compiled parser runs as the request path runs it
(``_parse.bench_encode``: one C loop appending records to one reused buffer,
no Python call per request); the reference parser is called once per request
(``parse_ref.encode_track``). Both produce the same bytes (checked first).
Each round runs for about --seconds; the median µs per request over --rounds
rounds is printed, then the compiled/reference ratio and the issue's targets
(≤ 1.5 µs per GET, ≤ 3 µs per POST).
"""

import argparse
import statistics
import sys
import time

# The installed package (pip install .), whose engine._parse is compiled.
from engine import _parse, parse_ref

UA = (b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      b"(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36")
LANG = b"en-US,en;q=0.9,de;q=0.8"
COOKIE = b"3d0be300-cbd2-11e8-aa59-ffd128a54d91"
IP = "203.0.113.9"

GET = dict(
    path=(b"/tr/v1/vid/3d0be300-cbd2-11e8-aa59-ffd128a54d91/ROCK/ON/lat/37.232332"
          b"/lon/6.32233223/first/true/score/6/ref/andy"),
    query=b"utm_source=newsletter&utm_medium=email&url=https%3A%2F%2Fexample.com%2Fpage",
    body=None,
)
POST = dict(
    path=b"/tr/v1/",
    query=None,
    body=(b'{"last":"https://localhost:5001/cw.html","next":"https://localhost:5001/cw.html",'
          b'"params":{"type":"a","ref":"Bespoke"},"created":1539102052702,"duration":34752,'
          b'"vid":"3d0be300-cbd2-11e8-aa59-ffd128a54d91","first":"false",'
          b'"sid":"3d0be301-cbd2-11e8-aa59-ffd128a54d91","tz":"America/Los_Angeles",'
          b'"device":"Linux","os":"Linux","sink":"cw$","score":1,"eid":"cw-a","uid":"admin"}'),
)
TARGETS_US = {"GET tuplets": 1.5, "POST JSON": 3.0}


def compiled_us(request, seconds):
    """µs per request of one round: C loop, reused buffer."""
    ids, encoder = _parse.TimeUUIDGen(), _parse.Encoder()
    n, spent = 1000, 0.0
    while spent < seconds:
        start = time.perf_counter()
        _parse.bench_encode(n, request["path"], request["query"], request["body"], IP, UA,
                            LANG, COOKIE, 1_700_000_000_000, ids, encoder)
        spent = time.perf_counter() - start
        n *= 2
    return spent / (n // 2) * 1e6


def reference_us(request, seconds):
    ids = parse_ref.TimeUUIDGen()
    encode = parse_ref.encode_track
    path, query, body = request["path"], request["query"], request["body"]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            encode(path, query, body, IP, UA, LANG, COOKIE, 1_700_000_000_000, ids)
        count += 100
    return (time.perf_counter() - start) / count * 1e6


def same_record(request):
    ids = dict(node=1, clock_seq=1, frozen_ns=1_700_000_000_000_000_000)
    a = _parse.encode_track(request["path"], request["query"], request["body"], IP, UA, LANG,
                            COOKIE, 1_700_000_000_000, _parse.TimeUUIDGen(**ids))
    b = parse_ref.encode_track(request["path"], request["query"], request["body"], IP, UA,
                               LANG, COOKIE, 1_700_000_000_000, parse_ref.TimeUUIDGen(**ids))
    return a == b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one round")
    args = parser.parse_args(argv)
    for request in (GET, POST):
        if not same_record(request):        # else the comparison means nothing
            raise SystemExit("FAILED: compiled and reference records differ")

    print("request -> spool record, median of %d rounds of %.2fs (python %s)"
          % (args.rounds, args.seconds, sys.version.split()[0]))
    for name, request in (("GET tuplets", GET), ("POST JSON", POST)):
        compiled = statistics.median(compiled_us(request, args.seconds) for _ in range(args.rounds))
        reference = statistics.median(reference_us(request, args.seconds)
                                      for _ in range(args.rounds))
        print("%-12s compiled %6.2f us (%8.0f/s)  reference %6.2f us  ratio %5.1fx  "
              "target <= %.1f us" % (name, compiled, 1e6 / compiled, reference,
                                     reference / compiled, TARGETS_US[name]))


if __name__ == "__main__":
    main()
