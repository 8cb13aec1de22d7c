"""Static files under /pub/v1/ from a real collector over real sockets:
conditionals, ranges, traversal sent raw, files changed on disk, a large
streamed file, HEAD."""
import hashlib
import http.client
import os
import shutil
import socket
import sqlite3
import ssl

import pytest

from conftest import fetch_hash, free_port, peak_rss, self_signed, wait_for

pytestmark = pytest.mark.integration

OLD = 1_600_000_000          # a settled mtime (2020-09-13 12:26:40 UTC): cacheable
LAST_MODIFIED = "Sun, 13 Sep 2020 12:26:40 GMT"
HELLO = b"hello, static world\n"
SECRET = b"SECRET-OUTSIDE-THE-ROOT"


def put(path, data, mtime=OLD):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.utime(path, (mtime, mtime))


def started(collector_factory, workers=1, **config):
    """A collector serving <dir>/www, with a secret file beside the root."""
    c = collector_factory(start=False, workers=workers)
    www = os.path.join(c.dir, "www")
    put(os.path.join(www, "hello.txt"), HELLO)
    put(os.path.join(www, "docs", "index.html"), b"<h1>docs</h1>")
    put(os.path.join(www, "app.js"), b"console.log(1)")
    put(os.path.join(c.dir, "secret.txt"), SECRET)
    c.config.update({"StaticDirectory": www, **config})
    c.write_config(c.config)
    c.www = www
    return c.start()


def raw_get(c, target, extra=b""):
    """One request sent byte for byte (no client-side path normalising)."""
    data = c.raw(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra +
                 b"\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


@pytest.fixture
def site(collector_factory):
    return started(collector_factory)


# ---- plain answers ------------------------------------------------------------------
def test_get_head_and_headers(site):
    status, h, body = site.get("/pub/v1/hello.txt")
    assert status == 200 and body == HELLO
    assert h["Content-Type"] == "text/plain; charset=utf-8"
    assert h["Content-Length"] == str(len(HELLO))
    assert h["Last-Modified"] == LAST_MODIFIED and h["ETag"].startswith('"')
    assert h["Cache-Control"] == "public, max-age=3600" and h["Accept-Ranges"] == "bytes"
    status, hh, body = site.request("HEAD", "/pub/v1/hello.txt")
    assert status == 200 and body == b""
    assert {k: hh[k] for k in ("Content-Length", "ETag", "Last-Modified", "Content-Type")} == \
        {k: h[k] for k in ("Content-Length", "ETag", "Last-Modified", "Content-Type")}
    # HEAD over a raw socket: exactly a head, no body bytes after it.
    data = site.raw(b"HEAD /pub/v1/hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert data.endswith(b"\r\n\r\n") and b"Content-Length: %d\r\n" % len(HELLO) in data


def test_content_types_index_and_redirect(site):
    status, h, _ = site.get("/pub/v1/app.js")
    assert status == 200 and h["Content-Type"] == "application/javascript; charset=utf-8"
    status, h, body = site.get("/pub/v1/docs/")
    assert status == 200 and body == b"<h1>docs</h1>"
    assert h["Content-Type"] == "text/html; charset=utf-8"
    status, h, _ = site.get("/pub/v1/docs")
    assert status == 301 and h["Location"] == "docs/"
    assert site.get("/pub/v1/missing.txt")[0] == 404
    assert site.get("/pub/v1/")[0] == 404                  # the root has no index.html
    status, h, _ = site.get("/pub/v1?x=1")                 # the root itself, without its slash
    assert status == 301 and h["Location"] == "/pub/v1/?x=1"
    status, h, _ = site.get("/pub/v1/docs/v1")             # a path that merely ends like it
    assert status == 404
    assert site.get("/pub/v1/hello.txt?cachebust=1")[2] == HELLO


def test_cache_control_from_config(collector_factory):
    c = started(collector_factory, StaticCacheControl="no-cache")
    assert c.get("/pub/v1/hello.txt")[1]["Cache-Control"] == "no-cache"


# ---- conditionals -----------------------------------------------------------------------
def test_conditional_requests(site):
    _, h, _ = site.get("/pub/v1/hello.txt")
    etag = h["ETag"]
    cases = [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": "W/" + etag}, 304),                       # weak comparison
        ({"If-None-Match": f'"a", {etag}, "b"'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": LAST_MODIFIED}, 304),
        ({"If-Modified-Since": "Mon, 14 Sep 2020 00:00:00 GMT"}, 304),
        ({"If-Modified-Since": "Sun, 13 Sep 2020 12:26:39 GMT"}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        # If-None-Match takes precedence over If-Modified-Since, either way round.
        ({"If-None-Match": '"other"', "If-Modified-Since": LAST_MODIFIED}, 200),
        ({"If-None-Match": etag, "If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 304),
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": etag}, 200),
        ({"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 412),
    ]
    for headers, expected in cases:
        status, rh, body = site.get("/pub/v1/hello.txt", headers=headers)
        assert status == expected, headers
        if expected == 304:
            assert body == b"" and rh["ETag"] == etag and "Content-Length" not in rh
        elif expected == 200:
            assert body == HELLO
    status, _, body = site.request("HEAD", "/pub/v1/hello.txt", headers={"If-None-Match": etag})
    assert status == 304 and body == b""


# ---- ranges -----------------------------------------------------------------------------------
def test_ranges(site):
    _, h, _ = site.get("/pub/v1/hello.txt")
    size = len(HELLO)
    cases = [
        ("bytes=0-4", 206, HELLO[0:5], f"bytes 0-4/{size}"),
        ("bytes=7-", 206, HELLO[7:], f"bytes 7-{size - 1}/{size}"),
        ("bytes=-6", 206, HELLO[-6:], f"bytes {size - 6}-{size - 1}/{size}"),
        ("bytes=3-1000", 206, HELLO[3:], f"bytes 3-{size - 1}/{size}"),
        ("bytes=-1000", 206, HELLO, f"bytes 0-{size - 1}/{size}"),
        (f"bytes={size}-", 416, None, f"bytes */{size}"),
        ("bytes=-0", 416, None, f"bytes */{size}"),
        ("bytes=0-1,5-6", 200, HELLO, None),                         # several: whole file
        ("bytes=5-2", 200, HELLO, None),                             # invalid: ignored
        ("lines=1-2", 200, HELLO, None),
    ]
    for value, expected, body_expected, content_range in cases:
        status, rh, body = site.get("/pub/v1/hello.txt", headers={"Range": value})
        assert status == expected, value
        assert rh.get("Content-Range") == content_range, value
        if body_expected is not None:
            assert body == body_expected and int(rh["Content-Length"]) == len(body), value
    for if_range, expected in ((h["ETag"], 206), (LAST_MODIFIED, 206), ('"stale"', 200),
                               ("W/" + h["ETag"], 200), ("Sat, 01 Jan 2000 00:00:00 GMT", 200)):
        status, _, body = site.get("/pub/v1/hello.txt",
                                   headers={"Range": "bytes=0-4", "If-Range": if_range})
        assert (status, body) == (expected, HELLO[:5] if expected == 206 else HELLO), if_range


# ---- traversal -----------------------------------------------------------------------------------
TRAVERSALS = [
    b"/pub/v1/../secret.txt", b"/pub/v1/../../secret.txt", b"/pub/v1/docs/../../secret.txt",
    b"/pub/v1/%2e%2e/secret.txt", b"/pub/v1/%2E%2E/secret.txt", b"/pub/v1/.%2e/secret.txt",
    b"/pub/v1/%2e%2e%2fsecret.txt", b"/pub/v1/docs%2f..%2f..%2fsecret.txt",
    b"/pub/v1/..%5csecret.txt", b"/pub/v1/..\\secret.txt", b"/pub/v1/%252e%252e/secret.txt",
    b"/pub/v1/hello.txt%00.png", b"/pub/v1//etc/passwd", b"/pub/v1/%2fetc%2fpasswd",
    b"/pub/v1/./hello.txt", b"/pub/v1/out.txt", b"/pub/v1/outdir/secret.txt",
    b"/pub/v1/outdir/", b"/pub/v1/.hidden",
]


def test_traversal_is_refused(site):
    os.symlink(os.path.join(site.dir, "secret.txt"), os.path.join(site.www, "out.txt"))
    os.symlink(site.dir, os.path.join(site.www, "outdir"))
    put(os.path.join(site.www, ".hidden"), SECRET)
    answers = set()
    for target in TRAVERSALS:
        status, head, body = raw_get(site, target)
        assert status in (400, 404), target
        assert SECRET not in body and site.dir.encode() not in head + body, target
        answers.add((status, body))
    # One answer for every refusal: nothing tells which paths exist outside.
    assert answers <= {(404, b"not found\n"), (400, b"malformed HTTP request\n")}
    assert (404, b"not found\n") in answers
    # A symlink that stays inside the root is followed.
    os.symlink("hello.txt", os.path.join(site.www, "alias.txt"))
    assert raw_get(site, b"/pub/v1/alias.txt")[2] == HELLO


# ---- files changed on disk ---------------------------------------------------------------------------
def test_changed_file_is_served_fresh(collector_factory):
    c = started(collector_factory, workers=2)
    path = os.path.join(c.www, "hello.txt")
    first = {c.get("/pub/v1/hello.txt")[1]["ETag"] for _ in range(6)}   # cached in each worker
    assert len(first) == 1
    put(path, b"HELLO, STATIC WORLD\n", mtime=OLD + 60)                   # same size, rewritten
    seen = [c.get("/pub/v1/hello.txt") for _ in range(6)]
    assert {body for _, _, body in seen} == {b"HELLO, STATIC WORLD\n"}
    second = {h["ETag"] for _, h, _ in seen}
    assert len(second) == 1 and second != first
    assert {h["Last-Modified"] for _, h, _ in seen} == {"Sun, 13 Sep 2020 12:27:40 GMT"}
    # An old ETag no longer matches: the client gets the new body, not a 304.
    status, _, body = c.get("/pub/v1/hello.txt", headers={"If-None-Match": first.pop()})
    assert status == 200 and body == b"HELLO, STATIC WORLD\n"
    # Replaced by another file with the same size and mtime (a new inode).
    put(path + ".new", b"hello, STATIC world\n", mtime=OLD + 60)
    os.replace(path + ".new", path)
    assert {c.get("/pub/v1/hello.txt")[2] for _ in range(6)} == {b"hello, STATIC world\n"}
    os.remove(path)
    assert {c.get("/pub/v1/hello.txt")[0] for _ in range(6)} == {404}


# ---- large files -------------------------------------------------------------------------------------
BIG = 50 << 20


def make_big(c):
    path = os.path.join(c.www, "big.bin")
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for i in range(BIG >> 20):
            block = hashlib.sha256(b"%d" % i).digest() * (1 << 15)       # 1 MiB, varied
            digest.update(block)
            fh.write(block)
    return path, digest.hexdigest()






def test_large_file_streamed(site):
    path, expected = make_big(site)
    [worker] = site.worker_pids()
    peak_before = peak_rss(worker)
    conn = site.connection(timeout=60)
    try:
        resp, total, digest = fetch_hash(conn, "/pub/v1/big.bin")
        assert resp.status == 200 and int(resp.getheader("Content-Length")) == BIG
        assert total == BIG and digest == expected
        # Flow control: the worker never held the file (or a large part) in memory.
        assert peak_rss(worker) - peak_before < 16 << 20
        # The same connection is kept alive and serves the next request.
        resp, total, digest = fetch_hash(conn, "/pub/v1/big.bin",
                                         {"Range": "bytes=1000-%d" % (BIG - 1001)})
        assert resp.status == 206 and total == BIG - 2000
        with open(path, "rb") as fh:
            fh.seek(1000)
            assert digest == hashlib.sha256(fh.read(BIG - 2000)).hexdigest()
        assert resp.getheader("Content-Range") == "bytes 1000-%d/%d" % (BIG - 1001, BIG)
        conn.request("HEAD", "/pub/v1/big.bin")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == str(BIG)
        assert resp.read() == b""
    finally:
        conn.close()




@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_large_file_streamed_over_tls(collector_factory):
    c = collector_factory(start=False, workers=1)
    cert, key = self_signed(c.dir)
    tls_port = free_port()
    www = os.path.join(c.dir, "www")
    os.makedirs(www)
    c.www = www
    path, expected = make_big(c)
    c.config.update({"StaticDirectory": www, "TLS": "local", "TLSCert": cert, "TLSKey": key,
                     "ProxyPortTLS": f"127.0.0.1:{tls_port}"})
    c.write_config(c.config)
    c.start(wait=False)
    context = ssl.create_default_context(cafile=cert)

    def connect():
        return http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=60, context=context)

    def serving():
        conn = connect()
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()
    assert wait_for(serving, timeout=20), c.logs()
    conn = connect()
    try:
        resp, total, digest = fetch_hash(conn, "/pub/v1/big.bin")
        assert resp.status == 200 and (total, digest) == (BIG, expected)
        resp, total, digest = fetch_hash(conn, "/pub/v1/big.bin", {"Range": "bytes=-1000"})
        with open(path, "rb") as fh:
            fh.seek(BIG - 1000)
            assert (resp.status, digest) == (206, hashlib.sha256(fh.read()).hexdigest())
    finally:
        conn.close()


def test_pipelined_stream_keeps_answers_in_order(site):
    make_big(site)
    request = b"GET /pub/v1/%s HTTP/1.1\r\nHost: t\r\n%s\r\n"
    data = site.raw(request % (b"big.bin", b"Range: bytes=0-2999999\r\n") +
                    request % (b"hello.txt", b"") +
                    request % (b"big.bin", b"Range: bytes=-5\r\nConnection: close\r\n"),
                    read_timeout=30)
    first, rest = data.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 206 ") and len(rest) > 3000000
    second, rest = rest[3000000:].split(b"\r\n\r\n", 1)
    assert second.startswith(b"HTTP/1.1 200 ") and rest.startswith(HELLO)
    third, last = rest[len(HELLO):].split(b"\r\n\r\n", 1)
    assert third.startswith(b"HTTP/1.1 206 ") and len(last) == 5


def open_fds_to(pids, path):
    count = 0
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == path
            except OSError:
                pass
    return count




def test_file_shrinking_mid_stream_cuts_the_connection(site):
    path, _ = make_big(site)
    conn = site.connection(timeout=30)
    conn.request("GET", "/pub/v1/big.bin")
    resp = conn.getresponse()                  # the head is out: the stream has started
    assert resp.status == 200
    # The client has read nothing yet, so the server is paused on a full
    # socket far short of 50 MiB; the file now ends before what it promised.
    os.truncate(path, 1 << 20)
    received = 0
    try:
        while True:
            chunk = resp.read(1 << 20)      # b"" at a cut (http.client does not raise)
            if not chunk:
                break
            received += len(chunk)
    except ConnectionError:                 # or a reset, when the abort sent RST
        pass
    conn.close()
    assert received < BIG                   # cut short: never the whole promised length
    assert site.get("/ping")[0] == 200                     # the worker lives on
    assert wait_for(lambda: open_fds_to(site.worker_pids(), path) == 0)


def test_client_leaving_mid_stream_releases_the_file(site):
    path, _ = make_big(site)
    s = socket.create_connection(("127.0.0.1", site.port))
    s.sendall(b"GET /pub/v1/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert open_fds_to(site.worker_pids(), path) == 1      # streaming, paused
    s.close()
    assert wait_for(lambda: open_fds_to(site.worker_pids(), path) == 0)
    assert site.get("/pub/v1/hello.txt")[2] == HELLO


# ---- tracking ---------------------------------------------------------------------------------------------
def test_static_requests_are_tracked(site):
    for _ in range(3):
        assert site.get("/pub/v1/hello.txt")[0] == 200
    assert site.get("/pub/v1/missing.txt")[0] == 404

    def urls():
        try:
            return sorted(r["url"] for r in site.rows("SELECT url FROM events"))
        except sqlite3.Error:
            return []
    # Waited for rather than read after a stop: an answer does not wait for
    # the store, and a drain may leave events in the spool for the next start.
    base = f"http://127.0.0.1:{site.port}/pub/v1/"
    assert wait_for(lambda: len(urls()) == 4)
    assert urls() == [base + "hello.txt"] * 3 + [base + "missing.txt"]
