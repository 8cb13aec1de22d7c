"""Batches and compressed bodies (issue 22) against a running collector,
then its store."""
import gzip
import json
import zlib

import lz4.frame
import pytest

from conftest import params_of

pytestmark = pytest.mark.integration

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"


def post_raw(c, path, body, headers=None):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return c.request("POST", path, body=body, headers=hdrs)


def test_json_array_stores_one_event_per_element(collector):
    batch = [{"ename": "a", "vid": VID}, {"ename": "b"}, {"ename": "c", "score": 2}]
    for path in ("/tr/v1/", "/tr/v1/batch"):
        status, headers, _ = post_raw(collector, path, json.dumps(batch).encode(),
                                      {"Cookie": f"vid={VID}"})
        assert status == 200 and f"vid={VID}" in headers["Set-Cookie"]
    assert collector.stop() == 0
    rows = collector.rows("SELECT eid, vid, ename, score FROM events ORDER BY ename")
    assert [r["ename"] for r in rows] == ["a", "a", "b", "b", "c", "c"]
    assert {r["vid"] for r in rows} == {VID}
    assert len({r["eid"] for r in rows}) == 6


def test_a_new_visitors_batch_is_one_visitor(collector):
    status, headers, _ = post_raw(collector, "/tr/v1/", b'[{"ename": "x"}, {"ename": "y"}]')
    assert status == 200
    vid = headers["Set-Cookie"].split("vid=")[1].split(";")[0]
    assert collector.stop() == 0
    assert {r["vid"] for r in collector.rows("SELECT vid FROM events")} == {vid}
    assert collector.rows("SELECT total FROM counters WHERE id='vids_created'") == [{"total": 1}]


@pytest.mark.parametrize("body,reason", [
    (b'[{"ename": "ok"}, 7]', b"element 1: JSON body must be an object"),
    (b'[{"ename": "ok"}, {"params": ' + b'[' * 300 + b']' * 300 + b'}]',
     b"element 1: JSON value nested too deeply"),
    (b"[]", b"batch body must hold at least one event"),
])
def test_a_bad_element_refuses_the_whole_batch(collector, body, reason):
    status, _, text = post_raw(collector, "/tr/v1/", body)
    assert status == 400 and reason in text
    assert collector.post("/tr/v1/", {"ename": "after"})[0] == 200
    assert collector.stop() == 0
    assert [r["ename"] for r in collector.rows("SELECT ename FROM events")] == ["after"]


def test_max_batch_events(collector_factory):
    c = collector_factory({"MaxBatchEvents": 3})
    assert post_raw(c, "/tr/v1/", json.dumps([{"n": i} for i in range(3)]).encode())[0] == 200
    status, _, text = post_raw(c, "/tr/v1/", json.dumps([{"n": i} for i in range(4)]).encode())
    assert status == 413 and b"over MaxBatchEvents (3)" in text
    assert c.stop() == 0
    assert len(c.rows("SELECT eid FROM events")) == 3


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),          # raw deflate, as some send it
    ("lz4", lz4.frame.compress),
])
def test_compressed_bodies(collector, encoding, compress):
    body = json.dumps([{"ename": "z", "m": encoding}] * 5).encode()
    status, _, _ = post_raw(collector, "/tr/v1/", compress(body),
                            {"Content-Encoding": encoding})
    assert status == 200
    single = json.dumps({"ename": "one", "m": encoding}).encode()
    assert post_raw(collector, "/tr/v1/", compress(single),
                    {"Content-Encoding": encoding})[0] == 200
    assert collector.stop() == 0
    assert len(collector.rows("SELECT eid FROM events")) == 6


def test_compression_bomb_and_size_limits(collector_factory):
    c = collector_factory({"MaxBodyBytes": 200_000})
    bomb = gzip.compress(b'{"a": "' + b"x" * 150_000 + b'"}')        # ratio ~ 500
    status, _, text = post_raw(c, "/tr/v1/", bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and b"ratio over 100" in text
    big = gzip.compress(json.dumps({"a": [str(i) for i in range(60_000)]}).encode())
    status, _, text = post_raw(c, "/tr/v1/", big, {"Content-Encoding": "gzip"})
    assert status == 413 and b"over MaxBodyBytes" in text
    assert post_raw(c, "/tr/v1/", b"xx", {"Content-Encoding": "br"})[0] == 415
    assert post_raw(c, "/tr/v1/", b"not gzip", {"Content-Encoding": "gzip"})[0] == 400
    assert c.stop() == 0
    assert c.rows("SELECT eid FROM events") == []


def test_send_beacon_text_plain_body(collector):
    status, _, _ = collector.request("POST", "/tr/v1/", body=b'{"ename": "beacon"}',
                                     headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert status == 200
    assert collector.stop() == 0
    assert [params_of(r) for r in collector.rows("SELECT params FROM events")] == [{}]
