"""Nothing lost, nothing doubled: stored markers equal the 2xx answers."""
import collections
import json
import threading
import uuid

import pytest

pytestmark = pytest.mark.integration


def _client(collector, worker, count, answered, lock):
    conn = collector.connection()
    vid = str(uuid.uuid4())
    for i in range(count):
        marker = f"w{worker}-{i}"
        kind = i % 4
        try:
            if kind == 0:
                conn.request("GET", f"/tr/v1/vid/{vid}/m/{marker}/url/u{i % 3}/first/true")
            elif kind == 1:
                conn.request("GET", f"/img/v1/vid/{vid}/m/{marker}/lat/1.5/lon/2.5")
            elif kind == 2:
                conn.request("POST", "/tr/v1/", body=json.dumps(
                    {"vid": vid, "m": marker, "uid": f"user{worker}", "url": f"u{i % 3}"}),
                    headers={"Content-Type": "application/json"})
            else:
                conn.request("GET", f"/rdr/v1/vid/{vid}/m/{marker}?redirect=https://example.com/")
            resp = conn.getresponse()
            resp.read()
        except OSError:
            conn.close()
            conn = collector.connection()
            continue
        if 200 <= resp.status < 400:
            with lock:
                answered.append((marker, vid, kind, i % 3))
    conn.close()


def test_stored_markers_equal_acknowledged_requests(collector):
    answered, lock = [], threading.Lock()
    threads = [threading.Thread(target=_client, args=(collector, w, 150, answered, lock))
               for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert collector.stop() == 0
    rows = collector.rows("SELECT vid, params, uid, url, latlon FROM events")
    stored = collections.Counter(json.loads(r["params"])["m"] for r in rows)
    assert max(stored.values()) == 1, "an event was stored twice"
    assert set(stored) == {a[0] for a in answered}
    assert len(answered) == 8 * 150

    vids = {a[1] for a in answered}
    reqs = {r["vid"]: r["total"] for r in collector.rows("SELECT vid, total FROM reqs")}
    assert reqs == {v: 150 for v in vids}
    assert collector.rows("SELECT ip, total FROM ips") == [{"ip": "127.0.0.1", "total": 1200}]
    [daily] = collector.rows("SELECT total FROM dailies")
    assert daily["total"] == 1200
    hits = {r["url"]: r["total"] for r in collector.rows("SELECT url, total FROM hits")}
    expected_hits = collections.Counter(f"u{a[3]}" for a in answered if a[2] in (0, 2))
    assert hits == dict(expected_hits)
    # first/true on the tr GET makes a visitor and a session per vid (first write wins).
    assert {r["vid"] for r in collector.rows("SELECT vid FROM visitors")} == vids
    assert collector.rows("SELECT COUNT(*) AS n FROM nodes")[0]["n"] == len(vids)
    locs = collector.rows("SELECT vid, latlon FROM locations")
    assert {(r["vid"], r["latlon"]) for r in locs} == {(v, "1.5,2.5") for v in vids}
    aliases = {(r["vid"], r["uid"]) for r in collector.rows("SELECT vid, uid FROM aliases")}
    assert len(aliases) == 8 and all(uid.startswith("user") for _, uid in aliases)
    users = {(r["vid"], r["uid"]) for r in collector.rows("SELECT vid, uid FROM users")}
    assert users == aliases
