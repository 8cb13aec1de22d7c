"""Micro-benchmark: parse_track, compiled (engine._parse) vs reference (engine.parse_ref).

    .venv/bin/python loadtest/bench_parse.py [--rounds 7] [--seconds 0.3]

Two requests: a GET tuplet path (the DESIGN.md §2 example plus a query with
UTM keys and typical browser headers), and a JSON POST with the DESIGN.md §2
body. Each round calls the parser in a tight loop for about --seconds; the
median parses/s over --rounds rounds is printed per implementation, then the
compiled/reference ratio. Ids come from the real TimeUUIDGen of each module.
"""

import argparse
import statistics
import sys
import time

# The installed package (pip install .), whose engine._parse is compiled.
from engine import _parse, parse_ref

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36")
LANG = "en-US,en;q=0.9,de;q=0.8"
COOKIE = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"

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


def rate(module, request, seconds):
    """Parses per second over one round of about `seconds`."""
    parse = module.parse_track
    ids = module.TimeUUIDGen()
    path, query, body = request["path"], request["query"], request["body"]
    batch = 1000
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            parse(path, query, body, "203.0.113.9", UA, LANG, COOKIE,
                  1_700_000_000_000, ids, "https://example.com")
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def median_rate(module, request, rounds, seconds):
    rate(module, request, seconds / 5)     # warm up
    return statistics.median(rate(module, request, seconds) for _ in range(rounds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one round")
    args = parser.parse_args(argv)

    # Same output, or the comparison means nothing.
    for request in (GET, POST):
        a = _parse.parse_track(request["path"], request["query"], request["body"],
                               "ip", UA, LANG, COOKIE, 0, parse_ref.TimeUUIDGen(1, 1), "")
        b = parse_ref.parse_track(request["path"], request["query"], request["body"],
                                  "ip", UA, LANG, COOKIE, 0, parse_ref.TimeUUIDGen(1, 1), "")
        a.pop("eid"), b.pop("eid"), a.pop("sid"), b.pop("sid")
        assert repr(a) == repr(b), (a, b)

    print("parse_track, median of %d rounds of %.2fs (python %s)"
          % (args.rounds, args.seconds, sys.version.split()[0]))
    for name, request in (("GET tuplets", GET), ("POST JSON", POST)):
        compiled = median_rate(_parse, request, args.rounds, args.seconds)
        reference = median_rate(parse_ref, request, args.rounds, args.seconds)
        print("%-12s compiled %10.0f/s   reference %10.0f/s   ratio %5.1fx"
              % (name, compiled, reference, compiled / reference))

    for name, module in (("compiled", _parse), ("reference", parse_ref)):
        gen = module.TimeUUIDGen()
        new = gen.new
        best = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(100_000):
                new()
            best.append(100_000 / (time.perf_counter() - start))
        print("TimeUUIDGen.new %-9s %10.0f/s" % (name, statistics.median(best)))


if __name__ == "__main__":
    main()
