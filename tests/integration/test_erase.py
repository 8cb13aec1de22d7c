"""Erasure and retention (issue 21) against a running collector, its SQLite
store and a real nats-server: `tracker erase`, POST /privacy/v1/erase and
`tracker prune`."""
import json
import sqlite3
import time

import pytest

from conftest import run_tracker, wait_for
from natsserver import nats_factory, needs_nats, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

ANN = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"
BOB = "4e1cf411-cbd2-11e8-aa59-ffd128a54d91"
SID = "5f2d0522-cbd2-11e8-aa59-ffd128a54d91"
TOKEN = "s3cret-erase-token-0123"


def tracker(*args):
    return run_tracker(*args)


def visit(c, vid, n, uid=None):
    for i in range(n):
        event = {"vid": vid, "sid": SID, "ename": f"e{i}", "url": "https://example.com/a",
                 "lat": 1.5, "lon": 2.5, "ref": "https://news.example/", "aff": "x1"}
        if uid:
            event.update(uid=uid, username=uid + "@example.com")
        assert c.post("/tr/v1/", event)[0] == 200


def count_by_vid(c, vid):
    """Rows naming ``vid`` in every table and view of the store."""
    found = {}
    with c.db() as db:
        names = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        for name in names:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{name}")')]
            if "vid" in cols:
                n = db.execute(f'SELECT count(*) FROM "{name}" WHERE vid = ? OR '
                               f'hex(vid) = upper(replace(?, "-", ""))', (vid, vid)).fetchone()[0]
                if n:
                    found[name] = n
    return found


def stored(c, vid):
    return wait_for(lambda: c.rows("SELECT count(*) AS n FROM events WHERE vid = ?",
                                   vid)[0]["n"] > 0)


@needs_nats
def test_tracker_erase_by_vid_and_uid_sqlite_and_nats(nats_factory, collector_factory):
    server = nats_factory().start()
    sub = nats_factory.client(server.url)
    erasures = sub.subscribe("tic.track.erase")
    c = collector_factory({"Notify": [
        {"Service": "sqlite", "Path": "tracker.db", "Critical": True},
        {"Service": "nats", "Hosts": [server.host], "Context": "tic.track", "Timeout": 2000}]})
    visit(c, ANN, 3)
    visit(c, BOB, 2, uid="bob")
    visit(c, "6a3e1633-cbd2-11e8-aa59-ffd128a54d91", 2)
    assert stored(c, ANN) and stored(c, BOB)
    assert wait_for(lambda: c.rows("SELECT count(*) AS n FROM events")[0]["n"] == 7)
    assert count_by_vid(c, ANN) and count_by_vid(c, BOB)

    out = tracker("erase", "--config", c.config_path, "--vid", ANN, "--uid", "bob")
    assert out.returncode == 0, out.stderr
    assert "sqlite" in out.stdout and "deleted" in out.stdout
    assert "erase message published on tic.track.erase" in out.stdout
    assert count_by_vid(c, ANN) == {} and count_by_vid(c, BOB) == {}
    assert c.rows("SELECT count(*) AS n FROM events")[0]["n"] == 2   # the third visitor stays
    assert c.rows("SELECT count(*) AS n FROM users WHERE uid = 'bob'")[0]["n"] == 0
    wait_until(lambda: erasures, what="the erase message")
    message = json.loads(erasures[0].data)
    assert message["erase"] == {"vid": [ANN], "uid": ["bob"]}

    again = tracker("erase", "--config", c.config_path, "--vid", ANN, "--uid", "bob")
    assert again.returncode == 0 and "nothing to delete" in again.stdout

    visit(c, ANN, 1)              # the collector still takes events for the same vid
    assert stored(c, ANN)
    assert c.stop() == 0


def test_bad_ids_are_refused_before_anything_is_deleted(collector):
    visit(collector, ANN, 1)
    assert stored(collector, ANN)
    out = tracker("erase", "--config", collector.config_path, "--vid", "not-a-uuid")
    assert out.returncode == 2 and "is not a UUID" in out.stderr
    out = tracker("erase", "--config", collector.config_path)
    assert out.returncode == 2 and "nothing to erase" in out.stderr
    assert count_by_vid(collector, ANN)


def test_http_erase_needs_the_token_and_erases(collector_factory):
    c = collector_factory({"EraseToken": TOKEN})
    visit(c, ANN, 2)
    visit(c, BOB, 1)
    assert stored(c, ANN) and stored(c, BOB)
    body = {"vid": ANN}
    assert c.post("/privacy/v1/erase", body)[0] == 401
    assert c.post("/privacy/v1/erase", body, {"Authorization": "Bearer wrong-token-xxxxxx"})[0] \
        == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert c.get("/privacy/v1/erase", auth)[0] == 405
    status, _, answer = c.post("/privacy/v1/erase", {"vid": "zzz"}, auth)
    assert status == 400 and b"not a UUID" in answer
    assert c.post("/privacy/v1/erase", b"[1,", auth)[0] == 400
    status, headers, answer = c.post("/privacy/v1/erase", body, auth)
    assert status == 200, answer
    report = json.loads(answer)
    assert report["erased"] == {"vid": [ANN], "uid": []}
    (line,) = report["stores"]
    assert line["store"] == "sqlite" and sum(line["deleted"].values()) >= 2
    assert count_by_vid(c, ANN) == {} and count_by_vid(c, BOB)
    assert c.get("/ping")[0] == 200           # the worker is fine
    assert c.stop() == 0


def test_http_erase_is_absent_without_a_token(collector):
    assert collector.post("/privacy/v1/erase", {"vid": ANN},
                          {"Authorization": f"Bearer {TOKEN}"})[0] == 404


def test_prune_deletes_only_what_is_older_than_retention(collector_factory):
    c = collector_factory()           # RetentionDays 0: only the command prunes
    old_ms = int((time.time() - 40 * 86400) * 1000)
    visit(c, BOB, 2)                                # recent
    assert stored(c, BOB)
    assert c.stop() == 0
    with sqlite3.connect(c.db_path) as db:          # age BOB's events: 40 days back
        for table in ("ev", "first_visits", "first_refs"):
            db.execute(f"UPDATE {table} SET created = ? WHERE vid = ?", (old_ms, _blob(BOB)))
    c.start()
    visit(c, ANN, 3)
    assert stored(c, ANN)
    assert c.stop() == 0
    unset = tracker("prune", "--config", c.config_path)
    assert unset.returncode == 2 and "RetentionDays is 0" in unset.stderr
    out = tracker("prune", "--config", c.config_path, "--days", "30")
    assert out.returncode == 0, out.stderr
    assert "ev 2" in out.stdout and "first_visits 1" in out.stdout, out.stdout
    assert count_by_vid(c, BOB) == {}
    assert c.rows("SELECT count(*) AS n FROM events WHERE vid = ?", ANN)[0]["n"] == 3
    again = tracker("prune", "--config", c.config_path, "--days", "30")
    assert again.returncode == 0 and "deleted: nothing" in again.stdout


def test_store_prunes_at_start_when_retention_is_set(collector_factory):
    c = collector_factory({"RetentionDays": 7})
    visit(c, BOB, 2)
    assert stored(c, BOB)
    assert c.stop() == 0
    with sqlite3.connect(c.db_path) as db:
        for table in ("ev", "first_visits", "first_refs"):
            db.execute(f"UPDATE {table} SET created = created - 8 * 86400000")
    c.start()
    assert wait_for(lambda: "retention pruned the embedded store" in c.logs(), timeout=15)
    assert c.rows("SELECT count(*) AS n FROM events")[0]["n"] == 0
    assert c.rows("SELECT count(*) AS n FROM visitors")[0]["n"] == 0
    assert c.stop() == 0


def _blob(vid):
    return bytes.fromhex(vid.replace("-", ""))
