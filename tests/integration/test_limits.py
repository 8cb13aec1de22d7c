"""Node-wide limits with several workers: rate limits, client IP, connection cap, metrics."""
import http.client
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.integration


def _fresh_get(port, path, headers=None):
    """One request on its own connection: status, headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, dict(resp.getheaders())
    finally:
        conn.close()


def _drive(port, seconds, threads=6, headers_for=lambda i: {}):
    """Fresh-connection load for ``seconds``; returns (results, elapsed)."""
    results, lock, stop = [], threading.Lock(), time.monotonic() + seconds
    counter = iter(range(10 ** 9))

    def loop():
        while time.monotonic() < stop:
            i = next(counter)
            status, headers = _fresh_get(port, f"/tr/v1/m/{i}", headers_for(i))
            with lock:
                results.append((status, headers))
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(threads):
            pool.submit(loop)
    return results, time.monotonic() - started


def _workers_seen(results):
    return {h["X-Tracker-Worker"].split("/")[0] for _, h in results if "X-Tracker-Worker" in h}


def _within(accepted, burst, rate, elapsed):
    expected = burst + rate * elapsed
    return 0.8 * expected <= accepted <= 1.2 * expected, expected


def test_per_ip_limit_holds_node_wide(collector_factory):
    c = collector_factory({"Debug": True, "RateLimit": {"PerIPRate": 40, "PerIPBurst": 20}})
    results, elapsed = _drive(c.port, 2.5)
    accepted = sum(1 for s, _ in results if s == 200)
    refused = [h for s, h in results if s == 429]
    ok, expected = _within(accepted, 20, 40, elapsed)
    assert ok, (accepted, expected, len(results))
    assert len(results) >= 50 and len(_workers_seen(results)) >= 2
    assert refused and all(int(h["Retry-After"]) >= 1 for h in refused)
    assert c.stop() == 0
    assert c.rows("SELECT COUNT(*) AS n FROM events")[0]["n"] == accepted


def test_global_limit_holds_across_client_ips(collector_factory):
    c = collector_factory({"Debug": True, "TrustedProxies": ["127.0.0.0/8"],
                           "RateLimit": {"GlobalRate": 30, "GlobalBurst": 15}})
    results, elapsed = _drive(c.port, 2.5, headers_for=lambda i: {
        "X-Forwarded-For": f"198.51.100.{i % 200}"})
    accepted = sum(1 for s, _ in results if s == 200)
    ok, expected = _within(accepted, 15, 30, elapsed)
    assert ok, (accepted, expected)
    assert len(_workers_seen(results)) >= 2
    c.stop()
    ips = {r["ip"] for r in c.rows("SELECT DISTINCT ip FROM events")}
    assert len(ips) > 10 and all(ip.startswith("198.51.100.") for ip in ips)


def test_forwarded_for_is_ignored_from_untrusted_peers(collector_factory):
    plain = collector_factory({}, name="untrusted")
    assert plain.get("/tr/v1/m/spoof", headers={"X-Forwarded-For": "6.6.6.6"})[0] == 200
    assert plain.get("/status", headers={"X-Forwarded-For": "6.6.6.6"})[2].count(b"127.0.0.1") == 1
    plain.stop()
    assert [r["ip"] for r in plain.rows("SELECT ip FROM events")] == ["127.0.0.1"]

    trusted = collector_factory({"TrustedProxies": ["127.0.0.1/32"]}, name="trusted")
    trusted.get("/tr/v1/m/real", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.5"})
    trusted.get("/tr/v1/m/fwd", headers={"Forwarded": 'for="[2001:db8::1]:443"'})
    trusted.stop()
    assert sorted(r["ip"] for r in trusted.rows("SELECT ip FROM events")) == [
        "2001:db8::1", "203.0.113.5"]
    assert {r["ip"] for r in trusted.rows("SELECT ip FROM dailies")} == {"2001:db8::1", "203.0.113.5"}


def _open_held(port, n):
    """n keep-alive connections that each got an answer; (socket, worker pid)."""
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        pid = int(re.search(rb"X-Tracker-Worker: \d+/(\d+)", reply).group(1))
        held.append((s, pid))
    return held


def _node_conns(sock):
    """Node-wide open connections, asked on an already counted keep-alive
    connection (a new connection would count itself, and its close races
    with the next check)."""
    import json
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while not reply.endswith(b"]"):
        chunk = sock.recv(4096)
        assert chunk, reply
        reply += chunk
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])[1]["Value"]


def _wait_conns(sock, expected):
    deadline = time.monotonic() + 10
    while _node_conns(sock) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return _node_conns(sock)


def _wait_all_closed(port):
    """Until a new connection is the node's only one."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            if _node_conns(s) == 1:
                return
        time.sleep(0.05)
    raise AssertionError("connections still counted after they were closed")


def test_connection_cap_is_node_wide_and_recovers(collector_factory):
    c = collector_factory({"Debug": True, "MaximumConnections": 8, "IdleTimeoutSeconds": 60})
    for _attempt in range(5):    # the kernel's hash may put all 7 on one worker (~1.6 %)
        held = _open_held(c.port, 7)
        if len({pid for _, pid in held}) == 2:
            break
        for s, _ in held:
            s.close()
        _wait_all_closed(c.port)
    assert len({pid for _, pid in held}) == 2          # both workers hold some
    asker = held[-1][0]
    assert _wait_conns(asker, 7) == 7
    extra = [socket.create_connection(("127.0.0.1", c.port), timeout=10) for _ in range(2)]
    replies = []
    for s in extra:                                   # 8th fits, 9th is refused
        try:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass                                      # already answered 503 and closed
        replies.append(s.recv(4096))
    # One fits (the 8th), one is refused; which is which depends on which
    # worker's accept ran first.
    refused = [r for r in replies if r.startswith(b"HTTP/1.1 503")]
    assert len(refused) == 1 and b"Retry-After: 1" in refused[0]
    assert sum(r.startswith(b"HTTP/1.1 200") for r in replies) == 1
    for s in extra:
        s.close()
    # Close three, keeping the asker and at least one connection of the
    # other worker (the one killed below).
    victim = next(pid for _, pid in held if pid != held[-1][1])
    spared = next(h for h in held if h[1] == victim)
    closing = [h for h in held[:-1] if h is not spared][:3]
    for s, _ in closing:
        s.close()
    remaining = [h for h in held if h not in closing]
    assert _wait_conns(asker, 4) == 4
    assert _fresh_get(c.port, "/ping")[0] == 200       # recovered

    lost = sum(1 for _, pid in remaining if pid == victim)
    os.kill(victim, signal.SIGKILL)
    assert _wait_conns(asker, 4 - lost) == 4 - lost
    for s, _ in remaining:
        s.close()


def test_metrics_equal_requests_whichever_worker_answers(collector_factory):
    c = collector_factory({"Debug": True})
    sent = 60
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda i: _fresh_get(c.port, f"/tr/v1/m/{i}")[0], range(sent)))
    assert statuses == [200] * sent
    line = 'tracker_requests_total{route="track",status="200"} %.1f' % sent
    answered_by, deadline = set(), time.monotonic() + 10
    while time.monotonic() < deadline and len(answered_by) < 2:
        status, headers = None, None
        conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        if line in text:
            answered_by.add(resp.getheader("X-Tracker-Worker").split("/")[0])
            assert "tracker_events_total %.1f" % sent in text
            assert 'tracker_request_duration_seconds_count{route="track"} %.1f' % sent in text
            assert "tracker_open_connections" in text and "tracker_spool_bytes" in text
        else:
            time.sleep(0.1)
    assert len(answered_by) == 2


@pytest.mark.parametrize("anonymize", ["off", "hash"])
def test_proxy_daily_limit_answers_api_limit_reached(collector_factory, anonymize):
    # with IPAnonymize "hash", dailies holds the hashed address and is read by it
    c = collector_factory({"ProxyDailyLimit": 5, "IPAnonymize": anonymize}, workers=1)
    for i in range(3):                     # three tracked events: dailies = 3
        assert c.get(f"/tr/v1/m/{i}")[0] == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:     # wait until they are in the store
        if c.rows("SELECT total FROM dailies") == [{"total": 3}]:
            break
        time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    answers = []
    for _ in range(12):                    # non-tracker routes are the proxied class
        conn.request("GET", "/api/thing")
        resp = conn.getresponse()
        answers.append((resp.status, resp.read()))
        time.sleep(0.02)
    conn.close()
    allowed = [a for a in answers if a[0] == 404]
    refused = [a for a in answers if a[0] == 429]
    assert refused and all(body == b"API Limit Reached" for _, body in refused)
    assert 2 <= len(allowed) <= 3          # 5 - 3 stored (+1: the first is let through before the read)
    assert answers[-1][0] == 429
    assert c.get("/tr/v1/m/after")[0] == 200   # tracking routes are not daily-limited
