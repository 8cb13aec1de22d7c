"""Bad requests get clear errors and never cost a worker or another event."""
import socket
import time

import pytest

pytestmark = pytest.mark.integration


def _count(collector):
    return collector.rows("SELECT COUNT(*) AS n FROM events")[0]["n"]


def test_malformed_json_is_400_and_stores_nothing(collector):
    pids = collector.worker_pids()
    for body in (b'{"vid": "x",', b"[1, 2]", b"\xff\xfe{}", b""):
        status, _, text = collector.post("/tr/v1/", body)
        assert status == 400, body
        assert text.strip() and len(text) < 200
    assert collector.post("/tr/v1/", {"m": "good"})[0] == 200
    assert collector.worker_pids() == pids
    collector.stop()
    rows = collector.rows("SELECT params FROM events")
    assert [r["params"] for r in rows] == ['{"m":"good"}']


def test_non_utf8_and_invalid_uuids_are_kept_not_fatal(collector):
    status, _, _ = collector.get("/tr/v1/name/%FF%FEok/vid/not-a-uuid/sid/1234")
    assert status == 200
    reply = collector.raw(b"GET /tr/v1/bad/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 ")
    assert collector.get("/ping")[0] == 200
    collector.stop()
    rows = collector.rows("SELECT vid, params FROM events")
    import json
    kept = [json.loads(r["params"]) for r in rows]
    first = next(p for p in kept if "name" in p)
    assert first["name"] == "\ufffd\ufffdok" and first["vid"] == "not-a-uuid" and first["sid"] == "1234"
    assert all(len(r["vid"]) == 36 for r in rows)


def test_oversized_header_is_431_and_target_414(collector_factory):
    c = collector_factory({"MaxHeaderBytes": 4096})
    reply = c.raw(b"GET /tr/v1/m/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")
    reply = c.raw(b"GET /tr/v1/" + b"a/" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414 ")
    assert c.get("/ping")[0] == 200
    c.stop()
    assert _count(c) == 0


def test_oversized_body_is_413(collector_factory):
    c = collector_factory({"MaxBodyBytes": 1000})
    status, _, _ = c.post("/tr/v1/", b'{"a":"' + b"x" * 5000 + b'"}')
    assert status == 413
    chunked = (b"POST /tr/v1/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"".join(b"%x\r\n%s\r\n" % (400, b"y" * 400) for _ in range(5)) + b"0\r\n\r\n")
    assert c.raw(chunked).startswith(b"HTTP/1.1 413 ")
    assert c.post("/tr/v1/", {"m": "small"})[0] == 200
    c.stop()
    assert _count(c) == 1


def test_slow_client_is_closed(collector_factory):
    c = collector_factory({"ReadTimeoutSeconds": 1, "IdleTimeoutSeconds": 1})
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        s.sendall(b"GET /tr/v1/m/slow HTTP/1.1\r\nHost: x\r\n")   # never finishes
        started = time.monotonic()
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert s.recv(4096) == b""                 # then closed
        assert time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        assert s.recv(4096) == b""                 # idle connection closed too
    assert c.get("/ping")[0] == 200


def test_pipelined_requests_are_answered_in_order(collector):
    batch = b"".join(b"GET /tr/v1/m/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    batch += b"GET /status HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = collector.raw(batch)
    assert reply.count(b"HTTP/1.1 200 OK") == 7
    assert reply.index(b'"Key":"client"') < reply.rindex(b"pong")
    assert reply.endswith(b"pong")
    collector.stop()
    assert _count(collector) == 5


def test_http10_and_garbage(collector):
    reply = collector.raw(b"GET /ping HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in reply
    assert collector.raw(b"\x16\x03\x01 garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert collector.raw(b"PUT /tr/v1/m/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                         until_closed=False).startswith(b"HTTP/1.1 405 ")
    assert collector.get("/ping")[0] == 200
