"""The store stage in its own processes (issue 16): store processes killed or
down under load, a plug-in sink getting the same fan-out as SQLite, several
store processes sharing a multi-writer sink, stuck workers replaced, and the
process titles operators see."""
import collections
import json
import os
import re
import signal
import sqlite3
import textwrap
import threading
import time

import pytest

from faultload import Load

pytestmark = pytest.mark.integration

PLUGIN = '''
import json, os
from engine.store.sinks.base import Sink


class RecorderSink(Sink):
    """Writes each batch's events, rows and counters as one JSON line."""
    service = "recorder"
    entry_keys = frozenset({"Service", "Critical", "Path", "MultiWriter"})

    def __init__(self, entry, config):
        super().__init__(entry, config)
        self.path = entry["Path"]
        self.multi_writer = bool(entry.get("MultiWriter"))

    async def write_batch(self, batch):
        line = {"pid": os.getpid(), "eids": [ev["eid"] for ev in batch],
                "rows": {t: [[list(k), ev["eid"], ev["created"]] for k, ev in r.items()]
                         for t, r in batch.rows.items()},
                "counters": {t: [[list(k), n] for k, n in c.items()]
                             for t, c in batch.counters.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\\n")
            fh.flush()
            os.fsync(fh.fileno())
        return len(batch)
'''


@pytest.fixture
def plugin_env(tmp_path):
    """PYTHONPATH with an installed distribution whose tracker.sinks entry
    point is the recorder sink above."""
    root = tmp_path / "plugin"
    info = root / "tracker_recorder-0.1.dist-info"
    info.mkdir(parents=True)
    (root / "tracker_recorder.py").write_text(textwrap.dedent(PLUGIN))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tracker-recorder\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tracker.sinks]\nrecorder = tracker_recorder:RecorderSink\n")
    return {"PYTHONPATH": str(root)}


def _wait(pred, timeout=20, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return pred()


def _metric(c, name, sink="sqlite"):
    text = c.get("/metrics")[2].decode()
    m = re.search(r'^%s\{sink="%s"\} (\S+)$' % (name, sink), text, re.M)
    return float(m.group(1)) if m else None


def _check_exact(c, load):
    """Every 2xx stored once (nothing else: no HTTP worker was killed), and the
    counters agree with the events."""
    rows = c.rows("SELECT vid, url, params FROM events")
    load.check_stored([json.loads(r["params"])["mk"] for r in rows], "SQLite")
    assert len(rows) == len(load.ok) and not load.unknown
    reqs = {r["vid"]: r["total"] for r in c.rows("SELECT vid, total FROM reqs")}
    assert reqs == dict(collections.Counter(r["vid"] for r in rows))
    hits = {r["url"]: r["total"] for r in c.rows("SELECT url, total FROM hits")}
    assert hits == dict(collections.Counter(r["url"] for r in rows if r["url"]))
    assert c.rows("SELECT SUM(total) AS n FROM dailies")[0]["n"] == len(rows)


def test_store_killed_with_kill_9_under_load_stays_exact(collector_factory):
    c = collector_factory({"BatchMaxAgeMs": 20, "MaxBodyBytes": 2000})
    load = Load(c, threads=4, pause=0.002).start()
    try:
        for n in range(3):                       # mid-batch, three times over
            load.wait_more(300)
            [store] = c.store_pids()
            os.kill(store, signal.SIGKILL)
            # its successor serving (a stop before that would leave it unstarted)
            assert _wait(lambda: c.logs().count('"store serving"') == n + 2)
        load.wait_more(300)
    finally:
        load.stop()
    assert c.stop() == 0
    assert c.logs().count('"store serving"') == 4
    _check_exact(c, load)
    assert [n for n in os.listdir(os.path.join(c.dir, "spool")) if n.endswith(".spool")] == []


def test_store_killed_while_full_batches_share_a_transaction_stays_exact(collector_factory):
    """20-event batches fill faster than their age at this load, so the store
    holds them in transactions of up to 0.5 s: each kill -9 lands in one, whose
    batches the spool has not forgotten (acknowledged only at the commit)."""
    c = collector_factory({"MaxBodyBytes": 2000, "Notify": [{
        "Service": "sqlite", "Path": "tracker.db", "BatchMaxEvents": 20,
        "BatchMaxAgeMs": 1000, "TransactionMaxAgeMs": 500}]})
    load = Load(c, threads=4, pause=0.002).start()
    try:
        for n in range(3):
            load.wait_more(1500)
            [store] = c.store_pids()
            os.kill(store, signal.SIGKILL)
            assert _wait(lambda: c.logs().count('"store serving"') == n + 2)
        load.wait_more(1500)
        assert _wait(lambda: (_metric(c, "tracker_sink_transactions_total") or 0) >= 1)
        batches = _metric(c, "tracker_batches_flushed_total")
        commits = _metric(c, "tracker_sink_transactions_total")
    finally:
        load.stop()
    print(f"{batches:.0f} batches in {commits:.0f} transactions")
    assert batches > 2 * commits         # full batches did share transactions
    assert c.stop() == 0
    _check_exact(c, load)


def test_store_down_20_s_ingest_goes_on_and_lag_rises_then_returns_to_0(collector_factory):
    c = collector_factory({"BatchMaxAgeMs": 50, "MaxBodyBytes": 2000,
                           "Notify": [{"Service": "sqlite", "Path": "tracker.db",
                                       "Critical": False}]})
    load = Load(c, threads=3, pause=0.005).start()
    try:
        time.sleep(3)
        before = load.ok_count()
        started = time.monotonic()
        time.sleep(5)
        rate_up = (load.ok_count() - before) / (time.monotonic() - started)
        blocker = sqlite3.connect(c.db_path, isolation_level=None, timeout=30)
        blocker.execute("BEGIN EXCLUSIVE")        # the store cannot write for 20 s
        down_at, lags = time.monotonic(), []
        before = load.ok_count()
        while time.monotonic() - down_at < 20:
            time.sleep(2)
            lags.append((_metric(c, "tracker_sink_lag_events"),
                         _metric(c, "tracker_sink_lag_seconds")))
        rate_down = (load.ok_count() - before) / (time.monotonic() - down_at)
        blocker.execute("ROLLBACK")
        blocker.close()
        # caught up with the live stream while the load goes on: the lag is
        # back to the age of the open batch
        assert _wait(lambda: _metric(c, "tracker_sink_lag_seconds") < 2, 60, 0.5)
        caught_up = _metric(c, "tracker_sink_lag_events")
    finally:
        load.stop()
    assert _wait(lambda: _metric(c, "tracker_sink_lag_events") == 0, 30, 0.5)
    print(f"2xx/s with the store up {rate_up:.0f}, down {rate_down:.0f}; lag while down "
          f"(events, seconds): {lags}; {caught_up} events once caught up under load")
    events = [e for e, _ in lags]
    assert events[-1] > events[0] > 0 and lags[-1][1] > 10       # rose for the whole outage
    assert rate_down > 0.5 * rate_up      # ingest did not wait for the store (noise: shared CPU)
    assert _metric(c, "tracker_sink_lag_seconds") == 0
    assert c.stop() == 0
    _check_exact(c, load)


def _recorded(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def _winners(lines, table, keep):
    """The row each key keeps over all batches, by fan_out's (created, eid) order."""
    best = {}
    for line in lines:
        for key, eid, created in line["rows"][table]:
            k = tuple(tuple(v) if isinstance(v, list) else v for v in key)
            old = best.get(k)
            if old is None or ((created, eid) < old if keep == "earliest" else (created, eid) > old):
                best[k] = (created, eid)
    return {k: eid for k, (created, eid) in best.items()}


def _send_corpus(c, n=240, fresh=False):
    """``fresh``: a new connection per request, so SO_REUSEPORT spreads the
    requests over every HTTP worker instead of pinning them to one."""
    vids = ["11111111-1111-4111-8111-%012d" % i for i in range(6)]
    conn = c.connection()
    for i in range(n):
        if fresh:
            conn.close()
            conn = c.connection()
        vid = vids[i % len(vids)]
        parts = [f"/tr/v1/vid/{vid}/m/p{i}/url/u{i % 4}/last/l{i % 3}"]
        if i % 11 == 0:                      # no vid: a new visitor (counters.vids_created)
            parts = [f"/tr/v1/m/p{i}/url/u{i % 4}/last/l{i % 3}"]
        if i % 5 == 0:
            parts.append("/first/true")
        if i % 3 == 0:
            parts.append(f"/uid/user{i % 4}")
        if i % 7 == 0:
            parts.append(f"/ref/r{i % 2}/aff/a{i % 3}/username/n{i % 2}")
        if i % 4 == 0:
            parts.append(f"/lat/{i % 3}.5/lon/2.25")
        if i % 6 == 0:
            parts.append(f"/outcome/o{i % 2}/sink/s")
        conn.request("GET", "".join(parts), headers={"User-Agent": f"agent-{i % 3}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()


SQLITE_KEYS = {"visitors": ("vid",), "sessions": ("vid", "sid"), "nodes": ("vid", "ip"),
               "locations": ("vid", "latlon"), "aliases": ("vid", "uid"),
               "users": ("uid", "vid"), "usernames": ("username", "vid"),
               "referrals": ("vid",), "affiliates": ("vid",)}
COUNTERS = {"dailies": ("ip", "day"), "ips": ("ip",), "reqs": ("vid",), "hits": ("url",),
            "referrers": ("url",), "browsers": ("browser", "bhash"),
            "outcomes": ("outcome", "sink", "url", "created"), "counters": ("id",)}


def _title(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().split(b"\0")[0].decode()


def _sqlite_key(table, row):
    key = []
    for col in SQLITE_KEYS[table]:
        value = row[col]
        if col == "latlon":
            value = tuple(float(x) for x in value.split(","))
        key.append(value)
    return tuple(key)


def test_a_plugin_sink_gets_the_rows_sqlite_stores(collector_factory, plugin_env):
    from engine.store.fanout import ROW_TABLES
    c = collector_factory({"BatchMaxAgeMs": 30, "BatchMaxEvents": 50, "Notify": [
        {"Service": "sqlite", "Path": "tracker.db"},
        {"Service": "recorder", "Path": "recorded.jsonl"}]}, env=plugin_env)
    _send_corpus(c)
    assert c.stop() == 0
    lines = _recorded(os.path.join(c.dir, "recorded.jsonl"))
    assert len(lines) >= 5                                # several batches
    eids = [e for line in lines for e in line["eids"]]
    assert len(eids) == len(set(eids)) == 240
    assert set(eids) == {r["eid"] for r in c.rows("SELECT eid FROM events")}
    for table, _key, _cols, keep in ROW_TABLES:
        stored = {_sqlite_key(table, r): r["eid"] for r in c.rows(f"SELECT * FROM {table}")}
        assert stored == _winners(lines, table, keep), table
        assert stored, table                              # the corpus fills every table
    for table, key in COUNTERS.items():
        summed = collections.Counter()
        for line in lines:
            for k, n in line["counters"][table]:
                summed[tuple(k)] += n
        stored = {tuple(r[col] for col in key): r["total"]
                  for r in c.rows(f"SELECT * FROM {table}")}
        assert stored == dict(summed) and stored, table


def test_store_workers_share_a_multi_writer_sink_sqlite_stays_in_store_0(collector_factory,
                                                                        plugin_env):
    c = collector_factory({"BatchMaxAgeMs": 30, "StoreWorkers": 2, "Notify": [
        {"Service": "sqlite", "Path": "tracker.db"},
        {"Service": "recorder", "Path": "recorded.jsonl", "MultiWriter": True}]},
        workers=4, env=plugin_env)
    assert len(c.store_pids()) == 2
    http_pids = c.worker_pids()
    store_by_index = {int(_title(pid).rsplit("-", 1)[1]): pid for pid in c.store_pids()}
    threads = [threading.Thread(target=_send_corpus, args=(c, 60, True)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.stop() == 0
    lines = _recorded(os.path.join(c.dir, "recorded.jsonl"))
    eids = [e for line in lines for e in line["eids"]]
    assert len(eids) == len(set(eids)) == 240             # each event once, over both
    assert set(eids) == {r["eid"] for r in c.rows("SELECT eid FROM events")}
    writers = {line["pid"] for line in lines}
    # A multi-writer sink is shared out by HTTP worker pid parity; with 240
    # fresh connections every worker gets some, so each parity's owner wrote.
    assert writers == {store_by_index[pid % 2] for pid in http_pids}, (writers, http_pids)
    serving = [json.loads(line) for line in c.logs().splitlines() if '"store serving"' in line]
    assert sorted(s["sinks"] for s in serving) == [["0-sqlite", "1-recorder"], ["1-recorder"]]


def test_a_worker_whose_loop_is_stuck_is_replaced(collector_factory):
    c = collector_factory({"WorkerTimeoutSeconds": 2}, workers=2,
                          env={"TRACKER_TEST_HOOKS": "block-loop"})
    victim = c.worker_pids()[0]
    os.kill(victim, signal.SIGUSR2)                   # its event loop blocks for good
    blocked_at = time.monotonic()
    assert _wait(lambda: c.replaced("http", [victim], 2), 20)
    replaced_after = time.monotonic() - blocked_at
    assert replaced_after < 2 + 5 + 3                 # timeout + SIGKILL grace + ticks
    assert '"worker silent; replacing it"' in c.logs()
    for i in range(20):                              # nothing hangs on the dead one
        assert c.get(f"/tr/v1/m/after{i}")[0] == 200
    [store] = c.store_pids()
    os.kill(store, signal.SIGUSR2)                    # a stuck store too
    assert _wait(lambda: c.replaced("store", [store], 1), 20)
    assert c.stop() == 0
    stored = {json.loads(r["params"])["m"] for r in c.rows("SELECT params FROM events")}
    assert {f"after{i}" for i in range(20)} <= stored
    print(f"stuck HTTP worker replaced after {replaced_after:.1f} s")


def load_healthcheck():
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        "healthcheck", os.path.join(root, "docker", "healthcheck.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_process_titles_show_the_roles(collector_factory):
    c = collector_factory(workers=2)

    def title(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[0].decode()
    assert title(c.proc.pid).startswith("tracker: supervisor serve --config ")
    probe = load_healthcheck()                 # the container's probe reads it there
    with open(f"/proc/{c.proc.pid}/cmdline", "rb") as fh:
        assert probe.target(probe.arguments_of(fh.read())) == (False, "127.0.0.1", c.port)
    assert sorted(title(p) for p in c.child_pids()) == [
        "tracker: http-0", "tracker: http-1", "tracker: store-0"]
    assert c.stop() == 0


def test_ready_is_503_while_a_critical_store_fails_to_write(collector_factory):
    # The store process publishes its sinks' health on the worker board; the
    # HTTP workers' /ready reads it (they hold no store connection themselves).
    c = collector_factory({"BatchMaxAgeMs": 20}, workers=1)
    assert c.get("/ready")[0] == 200
    blocker = sqlite3.connect(c.db_path, isolation_level=None, timeout=30)
    blocker.execute("BEGIN EXCLUSIVE")            # SQLite's busy timeout is 15 s
    try:
        assert c.get("/tr/v1/m/held")[0] == 200     # ingest goes on
        assert _wait(lambda: c.get("/ready")[0] == 503, 40, 0.2)
        status, _, body = c.get("/ready")
        assert body == b"store down: 0-sqlite\n"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert _wait(lambda: c.get("/ready")[0] == 200, 30, 0.2)
    assert c.stop() == 0
    assert [json.loads(r["params"])["m"] for r in c.rows("SELECT params FROM events")] == ["held"]
