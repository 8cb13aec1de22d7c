"""HTTPS load at the collectors of a Swarm stack, balanced and failed over by
the client, as a layer-4 balancer in front of the nodes would.

``backends()`` (given by the test) returns the collectors' published ports
now, {container: port}; a thread refreshes that every ``refresh`` seconds, so
replacement tasks join and stopped ones leave. Each client thread keeps one
keep-alive TLS connection and sends one request at a time, each with a unique
marker (``mk``), alternating a path-parameter GET and a JSON POST over a few
visitors. Outcomes, per marker:

- ``ok``: a 2xx answer, the collector's promise to keep the event;
- ``refused``: any other answer, {status: count} in ``answers`` (not stored);
- ``unknown``: sent, but no answer came (a task killed mid-request): it may
  be stored or not, never twice;
- a request whose connection could not be opened (refused connect, TLS
  handshake cut) was never sent: it goes to another backend, like a balancer
  retrying a failed connect, and ``failovers`` counts it.

A connection answered with ``Connection: close`` (a draining collector) is
closed, and the next request opens a new one, on whichever backend is up.
"""
import collections
import http.client
import json
import ssl
import threading
import time
import urllib.parse
import uuid

URLS = [f"https://site.example/page{i}" for i in range(5)]


class SwarmLoad:
    def __init__(self, backends, tls, prefix, threads=8, rate=None, refresh=0.3):
        """``rate``: events/s for all threads together (None: as fast as answered)."""
        self.backends = backends
        self.tls = tls
        self.prefix = prefix
        self.rate = rate
        self.refresh = refresh
        self.vids = [str(uuid.uuid4()) for _ in range(7)]
        self.lock = threading.Lock()
        self.ok, self.unknown = [], []
        self.answers = collections.Counter()
        self.failovers = 0
        self.per_second = collections.Counter()   # 2xx answers per whole second
        self.ports = {}
        self.down_until = {}                       # port -> monotonic time
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(n, threads), daemon=True)
                        for n in range(threads)]
        self.watcher = threading.Thread(target=self._watch, daemon=True)

    # ---- control -----------------------------------------------------------
    def start(self):
        self.ports = dict(self.backends())
        self.started = time.monotonic()
        self.watcher.start()
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=60):
        self.stopping.set()
        for t in self.threads + [self.watcher]:
            t.join(timeout)
        self.stopped = time.monotonic()
        assert not any(t.is_alive() for t in self.threads), "a load client hung"

    def ok_per_vid(self):
        """{vid: acknowledged events} (a marker's number picks its vid)."""
        with self.lock:
            found = collections.Counter(
                self.vids[int(m.rsplit("-", 1)[1]) % len(self.vids)] for m in self.ok)
        return dict(found)

    def ok_count(self):
        with self.lock:
            return len(self.ok)

    def rate_between(self, t0, t1):
        """2xx answers per second between two monotonic times (whole seconds)."""
        with self.lock:
            seconds = range(int(t0), int(t1))
            return sum(self.per_second[s] for s in seconds) / max(1, len(seconds))

    def wait_more(self, n, timeout=60):
        target = self.ok_count() + n
        deadline = time.monotonic() + timeout
        while self.ok_count() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load stalled: {self.ok_count()} 2xx, wanted {target}; "
                                     f"answers {dict(self.answers)}")
            time.sleep(0.05)

    # ---- backends ------------------------------------------------------------
    def _watch(self):
        while not self.stopping.wait(self.refresh):
            try:
                self.ports = dict(self.backends())
            except Exception:       # a failed `docker ps`: keep the last view
                continue

    def _pick(self, n, attempt):
        now = time.monotonic()
        ports = sorted(set(self.ports.values()))
        live = [p for p in ports if self.down_until.get(p, 0) <= now] or ports
        return live[(n + attempt) % len(live)] if live else None

    def _open(self, n):
        """A connected TLS connection to some backend; None while none answers."""
        for attempt in range(8):
            port = self._pick(n, attempt)
            if port is None:
                break
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.tls, timeout=15)
            try:
                conn.connect()
                return conn
            except (OSError, ssl.SSLError):
                conn.close()
                self.down_until[port] = time.monotonic() + 1.0
                with self.lock:
                    self.failovers += 1
        time.sleep(0.1)
        return None

    # ---- one client ----------------------------------------------------------
    def _send(self, conn, i, marker):
        vid = self.vids[i % len(self.vids)]
        url = URLS[i % len(URLS)]
        if i % 2:
            conn.request("GET", f"/tr/v1/vid/{vid}/mk/{marker}/url/"
                                f"{urllib.parse.quote(url, safe='')}")
        else:
            conn.request("POST", "/tr/v1/", body=json.dumps(
                {"vid": vid, "url": url, "mk": marker}).encode(),
                headers={"Content-Type": "application/json"})

    def _client(self, n, nthreads):
        conn, i = None, 0
        interval = nthreads / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            if conn is None:
                conn = self._open(n)
                if conn is None:
                    continue
            i += 1
            marker = f"{self.prefix}{n}-{i}"
            try:
                self._send(conn, i, marker)
                resp = conn.getresponse()
                resp.read()
            except (OSError, ssl.SSLError, http.client.HTTPException):
                conn.close()
                conn = None
                with self.lock:
                    self.answers["no answer"] += 1
                    self.unknown.append(marker)
                continue
            with self.lock:
                self.answers[resp.status] += 1
                if 200 <= resp.status < 300:
                    self.ok.append(marker)
                    self.per_second[int(time.monotonic())] += 1
            if resp.will_close:
                conn.close()
                conn = None
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_at = time.monotonic()
        if conn is not None:
            conn.close()

    # ---- checks --------------------------------------------------------------
    def refused(self):
        return {s: n for s, n in self.answers.items() if s != "no answer" and not 200 <= s < 300}

    def check_stored(self, stored, where):
        """``stored``: {marker: times stored}. Every 2xx marker exactly once,
        markers without an answer at most once, nothing else of this load."""
        mine = {m: n for m, n in stored.items() if m and m.startswith(self.prefix)}
        dups = {m: n for m, n in mine.items() if n > 1}
        assert not dups, f"{where}: {len(dups)} markers stored more than once, e.g. " \
                         f"{list(dups.items())[:5]}"
        missing = set(self.ok) - set(mine)
        assert not missing, f"{where}: {len(missing)} of {len(self.ok)} acknowledged events " \
                            f"missing, e.g. {sorted(missing)[:5]}"
        extra = set(mine) - set(self.ok) - set(self.unknown)
        assert not extra, f"{where}: {len(extra)} stored events never acknowledged nor in " \
                          f"doubt, e.g. {sorted(extra)[:5]}"
        return len(set(mine) - set(self.ok))     # in doubt, and kept
