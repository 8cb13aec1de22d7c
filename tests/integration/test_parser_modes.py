"""The compiled parser and its pure-Python reference store the same rows.

TRACKER_PURE_PARSE=1 makes a collector use engine.parse_ref; the same
requests sent to both collectors must produce identical events apart from
the ids and timestamps the server mints.
"""
import json

import pytest

pytestmark = pytest.mark.integration

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"
MINTED = ("eid", "created", "sid")


def _drive(c):
    headers = {"User-Agent": "Mozilla/5.0 (X11) test", "Accept-Language": "de-DE,de;q=0.8",
               "Cookie": f"vid={VID}"}
    c.get("/tr/v1/vid/%s/ROCK/ON/lat/37.232332/lon/6.32233223/first/true/score/6/ref/andy" % VID,
          headers=headers)
    c.get("/img/v1/ename/open/w/1920/h/1080?utm_source=news&utm_content=top&x=%FF", headers=headers)
    c.post("/tr/v1/", {"tz": "Europe/Zurich", "duration": "12.7", "params": {"a": [1, {"b": None}]},
                       "vid": "bad", "eid": "cw-a", "score": "nan"}, headers=headers)
    assert c.stop() == 0
    rows = c.rows("SELECT * FROM events ORDER BY params")
    for row in rows:
        for key in MINTED:
            row.pop(key)
        row["params"] = json.loads(row["params"])
    return rows


def test_compiled_and_reference_store_identical_events(collector_factory):
    compiled = _drive(collector_factory(name="compiled"))
    pure = collector_factory(name="pure", env={"TRACKER_PURE_PARSE": "1"})
    assert "parse_ref" in pure.logs()
    reference = _drive(pure)
    assert len(compiled) == 3
    assert compiled == reference
