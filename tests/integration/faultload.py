"""A steady, bounded client load for the fault-injection tests.

``Load(collector, threads)`` runs ``threads`` keep-alive clients, each
sending one request at a time (so at most ``threads`` requests are ever in
flight) with a unique marker ``mk`` per track request, alternating GET
path-parameter and POST JSON requests over a small set of visitors and urls
(so counters such as ``reqs`` and ``hits`` add up over many events). Every
``bad_every``-th request is malformed JSON and every ``big_every``-th is
larger than ``MaxBodyBytes``; their answers are counted too.

Bookkeeping, per marker:

- ``ok``: answered 2xx: the collector promised to keep these;
- ``unknown``: the request was sent but no answer came back (the worker was
  killed, the connection dropped): it may or may not have been accepted, so a
  test may find it stored or not, but never twice;
- anything else (4xx, 503) is counted in ``answers`` and must not be stored.
"""
import collections
import json
import threading
import time
import urllib.parse
import uuid

VIDS = [str(uuid.uuid4()) for _ in range(7)]
URLS = [f"https://site.example/page{i}" for i in range(5)]


class Load:
    def __init__(self, collector, threads=4, pause=0.004, bad_every=23, big_every=29,
                 big_size=5000, prefix="L"):
        self.c = collector
        self.pause = pause
        self.bad_every = bad_every
        self.big_every = big_every
        self.big_size = big_size
        self.prefix = prefix
        self.lock = threading.Lock()
        self.ok = []
        self.unknown = []
        self.answers = collections.Counter()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(w,), daemon=True)
                        for w in range(threads)]

    # ---- control ---------------------------------------------------------
    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=60):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a load client hung"

    def ok_count(self):
        with self.lock:
            return len(self.ok)

    def wait_more(self, n, timeout=60):
        """Block until ``n`` more 2xx answers than now (traffic is flowing)."""
        target = self.ok_count() + n
        deadline = time.monotonic() + timeout
        while self.ok_count() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load stalled: {self.ok_count()} 2xx, wanted {target}; "
                                     f"answers {dict(self.answers)}")
            time.sleep(0.02)

    # ---- one client --------------------------------------------------------
    def _request(self, conn, w, i):
        """Send request ``i``; return its marker (None: not a valid event)."""
        marker = f"{self.prefix}{w}-{i}"
        vid = VIDS[(w * 7 + i) % len(VIDS)]
        url = URLS[i % len(URLS)]
        if self.bad_every and i % self.bad_every == 0:
            conn.request("POST", "/tr/v1/", body=b'{"mk": "broken',
                         headers={"Content-Type": "application/json"})
            return None
        if self.big_every and i % self.big_every == 0:
            body = json.dumps({"vid": vid, "mk": "x" * self.big_size}).encode()
            conn.request("POST", "/tr/v1/", body=body,
                         headers={"Content-Type": "application/json"})
            return None
        if i % 2:
            conn.request("GET", f"/tr/v1/vid/{vid}/mk/{marker}/url/"
                                f"{urllib.parse.quote(url, safe='')}")
        else:
            conn.request("POST", "/tr/v1/", body=json.dumps(
                {"vid": vid, "url": url, "mk": marker}).encode(),
                headers={"Content-Type": "application/json"})
        return marker

    def _client(self, w):
        conn, i = None, 0
        while not self.stopping.is_set():
            i += 1
            marker = None
            try:
                if conn is None:
                    conn = self.c.connection(timeout=15)
                marker = self._request(conn, w, i)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = None
            except OSError:
                # no answer: a killed worker's connection, or a refused connect
                if conn is not None:
                    conn.close()
                conn = None
                with self.lock:
                    self.answers["no answer"] += 1
                    if marker is not None:
                        self.unknown.append(marker)
                time.sleep(0.05)
                continue
            with self.lock:
                self.answers[status] += 1
                if marker is not None and 200 <= status < 300:
                    self.ok.append(marker)
            if status == 503:
                time.sleep(0.1)        # Retry-After: back off a little
            elif self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    # ---- checks ------------------------------------------------------------
    def check_stored(self, stored, where):
        """``stored``: list of markers found in a store (one per row).

        Every 2xx marker exactly once; markers without an answer at most once;
        nothing that was refused."""
        counts = collections.Counter(stored)
        dups = {m: n for m, n in counts.items() if n > 1}
        assert not dups, f"{where}: duplicate rows for {len(dups)} markers, e.g. " \
                         f"{list(dups.items())[:5]}"
        ok, unknown = set(self.ok), set(self.unknown)
        missing = ok - set(counts)
        assert not missing, f"{where}: {len(missing)} acknowledged events missing, " \
                            f"e.g. {sorted(missing)[:5]}"
        extra = set(counts) - ok - unknown
        assert not extra, f"{where}: {len(extra)} stored events never acknowledged nor " \
                          f"in doubt, e.g. {sorted(extra)[:5]}"
        return set(counts) - ok    # the in-doubt ones that were kept
