"""The reverse proxy against a real upstream (tests/integration/upstream_app.py,
aiohttp in its own process), through a real collector over real sockets."""
import asyncio
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from conftest import fetch_hash, free_port, params_of, peak_rss, self_signed

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from upstream_app import pattern_sha256  # noqa: E402


class Upstream:
    def __init__(self, tls_files=(), port=None):
        self.port = port or free_port()
        self.scheme = "https" if tls_files else "http"
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "upstream_app.py"),
                                      str(self.port), *tls_files])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("upstream did not start")

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def connections(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", "/_stats")
        return json.loads(conn.getresponse().read())["connections"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def upstream():
    up = Upstream()
    yield up
    up.stop()


@pytest.fixture
def proxied(collector_factory, upstream):
    def make(workers=1, name="c", **config):
        return collector_factory({"ProxyUrl": upstream.url, **config}, workers=workers,
                                 name=name)
    return make


def headers_of(echo):
    return {k.lower(): v for k, v in echo["headers"]}


def test_methods_headers_status_and_tracking(proxied):
    c = proxied()
    body = os.urandom(100_000)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        payload = body if method in ("POST", "PUT", "PATCH") else None
        status, headers, raw = c.request(
            method, "/echo/a/b?x=1&status=201", body=payload,
            headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "TE": "trailers",
                     "Keep-Alive": "timeout=5", "X-Custom": "kept", "Cookie": "vid=abc; z=1",
                     "X-Forwarded-For": "6.6.6.6", "Host": "site.example:8443"})
        assert status == 201, raw
        assert headers["X-Upstream"] == "yes"
        echo = json.loads(raw)
        assert (echo["method"], echo["path"], echo["query"]) == (method, "/echo/a/b",
                                                                 "x=1&status=201")
        sent = headers_of(echo)
        assert sent["x-custom"] == "kept" and sent["cookie"] == "vid=abc; z=1"
        for hop in ("x-hop", "te", "keep-alive"):
            assert hop not in sent, hop
        # a client's own X-Forwarded-For is not passed on: it is spoofable
        assert sent["x-forwarded-for"] == "127.0.0.1"
        assert sent["x-forwarded-host"] == "site.example:8443"
        assert sent["x-forwarded-proto"] == "http"
        assert sent["x-origin-host"] == f"127.0.0.1:{c.config['ProxyUrl'].rsplit(':', 1)[1]}"
        if payload is not None:
            assert echo["body_size"] == len(body)
            assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    for code in (404, 500, 503):
        assert c.get(f"/echo/s?status={code}")[0] == code
    assert c.stop() == 0
    rows = c.rows("SELECT url, etyp, params FROM events ORDER BY created")
    proxied_rows = [r for r in rows if r["etyp"] == "proxy"]
    assert len(proxied_rows) == 9
    assert proxied_rows[0]["url"] == "http://site.example:8443/echo/a/b?x=1&status=201"
    assert params_of(proxied_rows[1])["method"] == "POST"


def test_set_cookie_headers_stay_separate_and_new_visitors_get_a_vid(proxied):
    c = proxied()
    conn = c.connection()
    conn.request("GET", "/cookies")
    resp = conn.getresponse()
    cookies = resp.headers.get_all("Set-Cookie")
    assert resp.read() == b"two cookies"
    assert "a=1; Path=/" in cookies and "b=2; Path=/" in cookies
    assert any(v.startswith("vid=") for v in cookies)       # a new visitor
    conn.request("GET", "/cookies", headers={"Cookie": "vid=" + cookies[-1][4:40]})
    resp = conn.getresponse()
    resp.read()
    assert not any(v.startswith("vid=") for v in resp.headers.get_all("Set-Cookie"))


def test_chunked_both_ways(proxied):
    c = proxied()
    pieces = [os.urandom(n) for n in (1, 5000, 70_000, 3)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    raw = c.raw(b"POST /echo/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n" + body)
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    echo = json.loads(_dechunk(payload) if b"chunked" in head.lower() else payload)
    assert echo["body_size"] == sum(map(len, pieces))
    assert echo["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    # the upstream streams a chunked answer; an HTTP/1.1 client gets it chunked
    status, headers, data = c.get("/download?size=3000000")
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked"
    assert hashlib.sha256(data).hexdigest() == pattern_sha256(3_000_000)
    # an HTTP/1.0 client gets it close-delimited
    raw = c.raw(b"GET /download?size=100000 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and b"Connection: close" in head
    assert hashlib.sha256(payload).hexdigest() == pattern_sha256(100_000)


def _dechunk(data):
    out = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2:]




GIB = 1 << 30


def test_one_gib_each_way_at_flat_memory(proxied):
    c = proxied(workers=1)
    worker = c.worker_pids()[0]
    for _ in range(3):       # warm up the pool and the worker's buffers
        c.get("/fixed?size=1000000")
    base = peak_rss(worker)
    # download: 1 GiB, chunked from the upstream, hashed as it arrives
    resp, n, digest = fetch_hash(c.connection(timeout=60), f"/download?size={GIB}")
    assert n == GIB and digest == pattern_sha256(GIB)
    # upload: 1 GiB with a Content-Length, hashed by the upstream
    block = os.urandom(1 << 20)
    conn = c.connection(timeout=60)
    conn.putrequest("PUT", "/echo/upload")
    conn.putheader("Content-Length", str(GIB))
    conn.endheaders()
    sent = hashlib.sha256()
    for _ in range(GIB >> 20):
        conn.send(block)
        sent.update(block)
    echo = json.loads(conn.getresponse().read())
    peak = peak_rss(worker)
    assert echo["body_size"] == GIB and echo["body_sha256"] == sent.hexdigest()
    grew_mib = (peak - base) / (1 << 20)
    print(f"worker peak RSS {base / (1 << 20):.1f} MiB before, {peak / (1 << 20):.1f} MiB "
          f"after 1 GiB each way (+{grew_mib:.1f} MiB)")
    assert grew_mib < 64


def test_websocket_echo_through_the_proxy(proxied):
    import aiohttp
    c = proxied()

    async def run():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{c.port}/ws") as ws:
                await ws.send_str("hello")
                assert (await ws.receive(timeout=5)).data == "echo:hello"
                blob = os.urandom(200_000)
                await ws.send_bytes(blob)
                assert (await ws.receive(timeout=5)).data == blob
                await ws.close()
    asyncio.run(run())
    assert c.get("/ping")[0] == 200


def test_upstream_down_is_502_and_slow_upstream_504(collector_factory, upstream):
    down = collector_factory({"ProxyUrl": f"http://127.0.0.1:{free_port()}"}, workers=1,
                             name="down")
    status, _, body = down.get("/anything")
    assert status == 502 and body == b"upstream unreachable\n"
    assert down.get("/ping")[0] == 200
    slow = collector_factory({"ProxyUrl": upstream.url, "ProxyReadTimeoutSeconds": 1},
                             workers=1, name="slow")
    started = time.monotonic()
    status, _, body = slow.get("/slow?seconds=4")
    assert status == 504 and body == b"upstream timeout\n"
    assert time.monotonic() - started < 3.9     # answered before the upstream did
    assert slow.get("/echo/after")[0] == 200


def test_upstream_dying_mid_answer_does_not_hang_the_client(proxied):
    c = proxied()
    with socket.create_connection(("127.0.0.1", c.port), timeout=10) as s:
        s.sendall(b"GET /die?size=2000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        got, started = b"", time.monotonic()
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            got += data
        assert time.monotonic() - started < 9      # closed, not left hanging
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"Content-Length: 2000000" in head
    assert 0 < len(body) < 2_000_000               # truncated, and visibly so


def test_keep_alive_upstream_connections_are_reused(proxied, upstream):
    c = proxied(workers=1)
    before = upstream.connections()
    conn = c.connection()
    for i in range(30):
        conn.request("GET", f"/echo/k{i}")
        assert conn.getresponse().read()
    for i in range(10):                  # new client connections share the pool too
        assert c.get(f"/echo/n{i}")[0] == 200
    opened = upstream.connections() - before
    assert 1 <= opened <= 2, opened
    text = c.get("/metrics")[2].decode()
    open_ = float(re.search(r'^tracker_proxy_upstream_connections\{state="open"\} (\S+)$',
                            text, re.M).group(1))
    idle = float(re.search(r'^tracker_proxy_upstream_connections\{state="idle"\} (\S+)$',
                           text, re.M).group(1))
    assert open_ == idle == opened              # all kept alive, none busy now


def test_pipelined_requests_answer_in_order(proxied):
    c = proxied()
    uid = "00000000-0000-4000-8000-000000000001"
    raw = c.raw(b"GET /echo/one HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /echo/two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /tr/v1/vid/" + uid.encode() + b"/mk/pipe HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /fixed?size=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /echo/three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 6, raw
    assert b'"path": "/echo/one"' in answers[0]
    assert answers[1].endswith(b"pong")
    assert b'"path": "/echo/two"' in answers[2] and b'"body_size": 5' in answers[2]
    assert answers[3].startswith(b"200") and b"Set-Cookie: vid=" + uid.encode() in answers[3]
    assert b"Content-Length: 1000" in answers[4] and answers[4].endswith(b"\r\n\r\n")
    assert b'"path": "/echo/three"' in answers[5]


def _read_answer(sock):
    """One response with a Content-Length, read whole from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_expect_100_continue(proxied):
    c = proxied()
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
        s.sendall(b"PUT /echo/e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"data")
        answer = _read_answer(s)
    assert answer.startswith(b"HTTP/1.1 200") and b'"body_size": 4' in answer
    assert b"expect" not in answer.lower()       # not passed upstream


def test_daily_limit_applies_to_proxied_routes(proxied):
    c = proxied(ProxyDailyLimit=3, ProxyDailyLimitChecker="sqlite")
    answers = []
    for i in range(10):
        status, _, body = c.get(f"/echo/d{i}")
        answers.append((status, body))
        time.sleep(0.02)
    assert answers[0][0] == 200 and answers[-1] == (429, b"API Limit Reached")
    assert 2 <= sum(s == 200 for s, _ in answers) <= 4
    assert c.get("/tr/v1/mk/still-tracked")[0] == 200


needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")


@needs_openssl
def test_https_upstream_verified_unless_told_not_to(collector_factory, tmp_path):
    up = Upstream(self_signed(str(tmp_path)))
    try:
        strict = collector_factory({"ProxyUrl": up.url}, workers=1, name="strict")
        status, _, body = strict.get("/echo/tls")
        assert status == 502                      # self-signed: verification fails
        lax = collector_factory({"ProxyUrl": up.url, "IgnoreInsecureTLS": True}, workers=1,
                                name="lax")
        status, _, body = lax.get("/echo/tls")
        assert status == 200 and json.loads(body)["path"] == "/echo/tls"
    finally:
        up.stop()


@needs_openssl
def test_tls_clients_get_hsts_secure_cookie_and_forwarded_proto(collector_factory, upstream):
    c = collector_factory(start=False, workers=1)
    cert, key = self_signed(c.dir)
    tls_port = free_port()
    c.config.update({"ProxyUrl": upstream.url, "TLS": "local", "TLSCert": cert, "TLSKey": key,
                     "ProxyPortTLS": f"127.0.0.1:{tls_port}"})
    c.write_config(c.config)
    c.start(wait=False)
    context = ssl.create_default_context(cafile=cert)
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=10,
                                               context=context)
            conn.request("GET", "/echo/secure", headers={"Host": "site.example"})
            resp = conn.getresponse()
            break
        except OSError:
            assert time.monotonic() < deadline, c.logs()
            time.sleep(0.1)
    echo = json.loads(resp.read())
    assert resp.status == 200
    assert resp.getheader("Strict-Transport-Security") == "max-age=31536000"
    assert "; Secure" in resp.getheader("Set-Cookie")
    assert headers_of(echo)["x-forwarded-proto"] == "https"
    conn.close()


class RawUpstream:
    """A socket-level upstream: ``handler(conn)`` runs for each connection, so
    a test can make it misbehave exactly as it needs."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        with conn:
            try:
                self.handler(conn)
            except OSError:
                pass


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    return data


def answer_once_then_drop(conn):
    """Answer with keep-alive, then close on the next request without
    answering: an upstream dropping an idle connection as the proxy reuses it."""
    read_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    conn.recv(65536)


def answer_garbage(conn):
    read_head(conn)
    conn.sendall(b"HTTP/1.1 2x0 NOT HTTP\r\n\x00\x01\r\n\r\n")
    time.sleep(1)


def test_a_request_on_a_connection_the_upstream_dropped_is_retried(collector_factory):
    up = RawUpstream(answer_once_then_drop)
    c = collector_factory({"ProxyUrl": f"http://127.0.0.1:{up.port}"}, workers=1)
    for i in range(5):
        status, _, body = c.get(f"/r{i}")
        assert (status, body) == (200, b"ok")
    assert up.connections >= 5                       # every retry opened a fresh one
    up.sock.close()


def test_a_malformed_upstream_answer_is_502(collector_factory):
    up = RawUpstream(answer_garbage)
    c = collector_factory({"ProxyUrl": f"http://127.0.0.1:{up.port}"}, workers=1)
    status, _, body = c.get("/x")
    assert (status, body) == (502, b"bad upstream response\n")
    assert c.get("/ping")[0] == 200
    up.sock.close()


def test_a_client_leaving_mid_download_leaves_the_worker_healthy(proxied, upstream):
    c = proxied(workers=1)
    pids = c.worker_pids()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
            s.sendall(b"GET /download?size=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    status, _, data = c.get("/fixed?size=100000")
    assert status == 200 and len(data) == 100_000
    assert c.proc.poll() is None and c.worker_pids() == pids     # same worker, no crash


def test_a_restarted_upstream_is_reached_again(collector_factory):
    up = Upstream()
    try:
        c = collector_factory({"ProxyUrl": up.url}, workers=1)
        assert c.get("/echo/before")[0] == 200        # leaves a kept-alive connection
        up.stop()
        up = Upstream(port=up.port)                   # same address, the old socket is dead
        status, _, body = c.get("/echo/after")
        assert status == 200 and json.loads(body)["path"] == "/echo/after"
    finally:
        up.stop()


def test_upgrade_refused_by_the_upstream_is_answered_and_closed(proxied):
    c = proxied()
    raw = c.raw(b"GET /echo/ws-no HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", read_timeout=10)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    echo = json.loads(body)
    assert headers_of(echo)["upgrade"] == "websocket"   # passed on, as an upgrade request


def test_proxied_events_are_all_stored_by_a_clean_stop(proxied):
    # Proxied answers do not wait for the spool commit, so the stop may come
    # while their group is still being written: the drain must wait for it.
    for attempt in range(3):
        c = proxied(workers=2, name=f"stop{attempt}")
        n = 40
        for i in range(n):
            assert c.get(f"/echo/stop{i}")[0] == 200
        assert c.stop() == 0
        stored = c.rows("SELECT COUNT(*) AS n FROM events WHERE etyp = 'proxy'")[0]["n"]
        assert stored == n, (attempt, stored, c.logs()[-2000:])
