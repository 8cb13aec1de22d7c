"""Corpora with a known truth for the report tests, sent to a running
collector over HTTP (one JSON event per POST /tr/v1/, several keep-alive
connections at once), in phases a few milliseconds apart so that "later"
(the collector's created, in ms) is true between phases."""
import http.client
import json
import random
import threading
import time
import uuid


def send(port, events, connections=6):
    """POST every event; return how many were answered 200 (all, or it raises)."""
    done, errors, lock = [0], [], threading.Lock()

    def run(part):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for event in part:
                conn.request("POST", "/tr/v1/", body=json.dumps(event),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise AssertionError(f"{event} answered {resp.status}")
                with lock:
                    done[0] += 1
        except Exception as exc:            # reported by the caller
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(events[i::connections],))
               for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return done[0]


def send_phases(port, phases, gap=0.02):
    total = 0
    for events in phases:
        total += send(port, events)
        time.sleep(gap)             # every event of the next phase is created later
    return total


class Experiment:
    """2,000 visitors in experiment "x1", split A or B at random (a known,
    slightly uneven split); exactly 10 % of A's and 15 % of B's visitors
    convert with outcome "signup" after their exposure, and a third of those
    also with "purchase". What must not count: repeated exposures, outcomes
    of another experiment, outcomes before the exposure, and a second
    experiment "x2" (three splits, nobody converts).

    For the other reports (the dashboard shows them all): each visitor has
    one session; the first 50 arrive first (a "landing" event) and refer 150
    of the others; exposures carry one of 7 pages, a third a referral code,
    a fifth a UTM campaign."""

    def __init__(self, visitors=2000, seed=20):
        rnd = random.Random(seed)
        self.vids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(visitors)]
        self.split = {v: rnd.choice("AB") for v in self.vids}
        self.members = {s: [v for v in self.vids if self.split[v] == s] for s in "AB"}
        target = {"A": 0.10, "B": 0.15}
        self.converters = {s: set(rnd.sample(self.members[s], round(target[s] * len(m))))
                           for s, m in self.members.items()}
        self.purchasers = {s: set(rnd.sample(sorted(c), len(c) // 3))
                           for s, c in self.converters.items()}
        others = [v for v in self.vids if not any(v in c for c in self.converters.values())]
        self.early = others[:60]                 # an outcome before the exposure
        self.elsewhere = others[60:160]          # an outcome of another experiment
        self.x2 = {v: "ABC"[i % 3] for i, v in enumerate(self.vids[:300])}
        self.sid = {v: str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for v in self.vids}
        self.referrer = {v: rnd.choice(self.vids[:50]) for v in self.vids[50:200]}
        self.phases = self._phases(rnd)
        self.events = sum(len(p) for p in self.phases)

    def _visit(self, rnd, v):
        event = {"vid": v, "sid": self.sid[v], "url": f"https://shop.example/p/{rnd.randint(1, 7)}"}
        if v in self.referrer:
            event["ref"] = self.referrer[v]
        elif rnd.random() < 0.33:
            event["ref"] = f"friend-{rnd.randint(1, 8)}"
        if rnd.random() < 0.2:
            event.update(utm_source=rnd.choice(["news", "social"]), utm_medium="email",
                         utm_campaign=f"launch-{rnd.randint(1, 3)}")
        return event

    def _phases(self, rnd):
        arrivals = [{"vid": v, "sid": self.sid[v], "ename": "landing",
                     "url": "https://shop.example/"} for v in self.vids[:50]]
        before = [{"vid": v, "sid": self.sid[v], "xid": "x1", "outcome": "signup",
                   "ename": "signup"} for v in self.early]
        exposures = [{**self._visit(rnd, v), "xid": "x1", "split": self.split[v],
                      "ename": "view"} for v in self.vids]
        exposures += [{"vid": v, "sid": self.sid[v], "xid": "x1", "split": self.split[v],
                       "ename": "view"} for v in rnd.sample(self.vids, 200)]   # seen again
        exposures += [{"vid": v, "sid": self.sid[v], "xid": "x2", "split": s, "ename": "view"}
                      for v, s in self.x2.items()]
        after = [{"vid": v, "sid": self.sid[v], "xid": "x1", "outcome": "signup",
                  "ename": "signup"} for c in self.converters.values() for v in c]
        after += [{"vid": v, "sid": self.sid[v], "xid": "other", "outcome": "signup"}
                  for v in self.elsewhere]
        for phase in (before, exposures, after):
            rnd.shuffle(phase)
        last = [{"vid": v, "sid": self.sid[v], "xid": "x1", "outcome": "purchase",
                 "ename": "buy"} for c in self.purchasers.values() for v in c]
        return [arrivals, before, exposures, after, last]


def stored_experiment(directory, config=None):
    """A started collector holding the Experiment corpus: (collector, truth)."""
    from conftest import Collector, wait_for
    c = Collector(str(directory), config)
    c.start()
    truth = Experiment()
    try:
        assert send_phases(c.port, truth.phases) == truth.events
        stored = lambda: c.rows("SELECT count(*) AS n FROM ev")[0]["n"]   # noqa: E731
        assert wait_for(lambda: stored() >= truth.events, timeout=60), stored()
        assert stored() == truth.events
    except BaseException:
        c.stop()
        raise
    return c, truth
