"""Realistic visitor traffic for the collector (locust).

Each simulated user is a visitor: it arrives without a cookie, gets the `vid`
cookie from its first tracked answer and keeps sending it, browses a few pages
(tuplet GETs, JSON POSTs with the Go collector's field set, pixel GETs,
redirects to an allowed host, now and then a malformed JSON POST that must be
answered 400), then leaves; the same user then starts over as a new visitor.

Every request carries a unique marker (`m`), and every answer is written to a
ledger (one JSON line per request: marker, kind, status, vid sent, vid set,
start time, latency, what failed its check) so
the runner can check the store: the stored markers must be exactly the 2xx/3xx
answers, each once, under the vid the visitor holds.

    locust -f loadtest/locustfile.py --headless -u 20 -r 20 -t 30s \
           --stop-timeout 10 --host http://127.0.0.1:8080

Environment:
    TRACKER_LOCUST_WEIGHTS  relative weights, default
                            "tuplet=40,post=25,pixel=25,redirect=8,bad=2"
    TRACKER_LOCUST_LEDGER   where to write the ledger (JSON lines); none: no ledger
    TRACKER_REDIRECT_HOST   allowed redirect host (default example.com; the
                            collector must list it in RedirectHosts or Domains)

Locust measures realism and correctness, not peak throughput: use wrk
(loadtest/run.py) for that.
"""
import json
import os
import random
import time
import uuid

from locust import HttpUser, between, events

DEFAULT_WEIGHTS = "tuplet=40,post=25,pixel=25,redirect=8,bad=2"
RUN = uuid.uuid4().hex[:8]
REDIRECT_HOST = os.environ.get("TRACKER_REDIRECT_HOST", "example.com")
LEDGER = {}     # marker -> [kind, status, vid_sent, vid_set, started (s), latency (ms), problem]
_seq = [0]


def parse_weights(spec):
    weights = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name not in KINDS:
            raise ValueError(f"unknown request kind {name!r} (known: {', '.join(KINDS)})")
        weights[name] = int(value)
    return weights


def next_marker():
    _seq[0] += 1
    return f"L{RUN}-{_seq[0]}"


class Visitor(HttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self):
        self.arrive()

    def arrive(self):
        """A new visitor: no cookie, a fresh browser session id."""
        self.client.cookies.clear()
        self.sid = str(uuid.uuid4())
        self.pages_left = random.randint(3, 30)
        self.first = True

    # ---- one request, checked and written to the ledger --------------------
    def send(self, kind, method, path, expect, **kw):
        marker = kw.pop("marker")
        vid_sent = self.client.cookies.get("vid")
        started = time.time()
        entry = LEDGER[marker] = [kind, None, vid_sent, None, started, None, None]  # unanswered
        with self.client.request(method, path, name=kind, catch_response=True,
                                 allow_redirects=False, **kw) as resp:
            entry[5] = (time.time() - started) * 1000
            status = entry[1] = resp.status_code
            vid_set = entry[3] = _cookie_vid(resp.headers.get("Set-Cookie", ""))
            problem = expect(resp)
            if 200 <= status < 400 and vid_sent and vid_set != vid_sent:
                problem = f"vid cookie changed: sent {vid_sent}, got {vid_set}"
            if problem:
                entry[6] = problem
                resp.failure(problem)
            else:
                resp.success()
        self.first = False
        self.pages_left -= 1
        if self.pages_left <= 0:
            self.arrive()

    # ---- the request kinds -------------------------------------------------
    def tuplet(self):
        m = next_marker()
        page = random.randint(1, 50)
        path = (f"/tr/v1/m/{m}/ename/view/url/%2Fpage%2F{page}/sid/{self.sid}"
                f"/first/{'true' if self.first else 'false'}/lat/37.23/lon/6.32")
        if random.random() < 0.2:
            path += "?utm_source=newsletter&utm_medium=email&utm_campaign=launch"
        self.send("tuplet", "GET", path, _status(200), marker=m)

    def post(self):
        m = next_marker()
        body = {"last": "https://localhost:5001/cw.html", "next": "https://localhost:5001/cw.html",
                "params": {"type": "a", "ref": "Bespoke", "m": m},
                "created": int(time.time() * 1000), "duration": random.randint(1, 60000),
                "first": "true" if self.first else "false", "sid": self.sid,
                "tz": "America/Los_Angeles", "device": "Linux", "os": "Linux", "sink": "cw$",
                "score": 1, "eid": "cw-a", "uid": "admin"}
        vid = self.client.cookies.get("vid")
        if vid:                          # a browser client reads its cookie into the body
            body["vid"] = vid
        self.send("post", "POST", "/tr/v1/", _status(200), marker=m,
                  data=json.dumps(body), headers={"Content-Type": "application/json"})

    def pixel(self):
        m = next_marker()
        self.send("pixel", "GET", f"/img/v1/m/{m}/etyp/open/xid/mail{random.randint(1, 7)}",
                  _pixel, marker=m)

    def redirect(self):
        m = next_marker()
        target = f"https://{REDIRECT_HOST}/landing/{random.randint(1, 9)}"
        self.send("redirect", "GET", f"/rdr/v1/m/{m}/ename/click?redirect={target}",
                  _location(target), marker=m)

    def bad(self):
        m = next_marker()
        self.send("bad", "POST", "/tr/v1/", _status(400), marker=m,
                  data=f'{{"m":"{m}","vid":', headers={"Content-Type": "application/json"})


KINDS = {"tuplet": Visitor.tuplet, "post": Visitor.post, "pixel": Visitor.pixel,
         "redirect": Visitor.redirect, "bad": Visitor.bad}
# Locust picks a task uniformly from this list: a kind of weight w is in it w times.
Visitor.tasks = [KINDS[name] for name, weight in
                 parse_weights(os.environ.get("TRACKER_LOCUST_WEIGHTS", DEFAULT_WEIGHTS)).items()
                 for _ in range(weight)]


def _cookie_vid(header):
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "vid":
            return value
    return None


def _status(code):
    def check(resp):
        return None if resp.status_code == code else f"expected {code}, got {resp.status_code}"
    return check


def _pixel(resp):
    if resp.status_code != 200:
        return f"expected 200, got {resp.status_code}"
    if resp.headers.get("Content-Type") != "image/gif" or not resp.content.startswith(b"GIF8"):
        return "not a GIF"
    return None


def _location(target):
    def check(resp):
        if resp.status_code != 302:
            return f"expected 302, got {resp.status_code}"
        if resp.headers.get("Location") != target:
            return f"redirected to {resp.headers.get('Location')!r}, not {target!r}"
        return None
    return check


@events.test_stop.add_listener
def _write_ledger(**_):
    path = os.environ.get("TRACKER_LOCUST_LEDGER")
    if not path:
        return
    with open(path, "w") as fh:
        for marker, (kind, status, vid_sent, vid_set, started, ms, problem) in LEDGER.items():
            fh.write(json.dumps({"m": marker, "kind": kind, "status": status, "vid_sent": vid_sent,
                                 "vid_set": vid_set, "t": started, "ms": ms,
                                 "problem": problem}) + "\n")
