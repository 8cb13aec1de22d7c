"""The connection's own scan of plain requests (engine/http/_connection.pyx,
``_scan``) must answer exactly as the httptools path does: same bytes on the
wire, same records in the spool, for generated request streams cut into
arbitrary chunks. Anything it does not recognise goes to httptools, so the
refusals (400, 413, 414, 431) must match too."""
import asyncio
import os

import uvloop
from hypothesis import HealthCheck, given, settings, strategies as st

from engine._parse import TimeUUIDGen, decode
from engine.config import config_from_dict
from engine.http.protocol import ConnectionRegistry, HttpConnection
from engine.ingest._spool import SpoolWriter
from engine.ingest._track import TrackRoutes
from engine.ingest.app import TrackerApp
from engine.limits._bucket import SharedLimits
from engine.metrics import WorkerStats

from test_spool_writer import Transport, frames

CONFIG = {"TLS": "off", "Notify": [], "MaxHeaderBytes": 600, "MaxBodyBytes": 300,
          "RedirectHosts": ["example.com"], "LogLevel": "error"}


class Stack:
    """A worker's request path around one connection (scan on or off)."""

    def __init__(self, directory, scan, loop):
        config = config_from_dict(dict(CONFIG))
        registry = ConnectionRegistry(config)
        registry.date.value = b"Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"   # same for both
        registry.date.second = 2 ** 40                                     # never refreshed
        self.app = TrackerApp(config, WorkerStats(), registry, SharedLimits.create(64), 0)
        self.app.scan = scan
        self.spool = SpoolWriter(directory, 1 << 24, durable=False, interval_ms=0)
        self.spool.start(loop)
        ids = TimeUUIDGen(node=0x0102030405, clock_seq=9, frozen_ns=1_800_000_000_000_000_000)
        self.app.attach(self.spool, TrackRoutes(self.app, self.spool, ids=ids))
        self.conn = HttpConnection(self.app, registry)
        self.conn.connection_made(Transport())

    async def feed(self, chunks):
        for chunk in chunks:
            self.conn.data_received(chunk)
        await self.spool.flush()
        self.spool.close()
        return bytes(self.conn.transport.out)

    def records(self):
        out = []
        for name in sorted(os.listdir(self.spool.path.rsplit("/", 1)[0])):
            for _seq, payload in frames(os.path.join(self.spool.path.rsplit("/", 1)[0], name)):
                event = decode(payload)
                event.pop("created")        # the wall clock: the only difference allowed
                out.append(event)
        return out


def run_both(tmp_path, chunks):
    async def main():
        loop = asyncio.get_running_loop()
        scanned = Stack(str(tmp_path / "scan"), True, loop)
        parsed = Stack(str(tmp_path / "httptools"), False, loop)
        return (await scanned.feed(chunks), scanned.records(),
                await parsed.feed(chunks), parsed.records())
    return uvloop.run(main())


NAMES = st.sampled_from([b"Host", b"host", b"HOST", b"User-Agent", b"user-agent", b"Cookie",
                         b"Origin", b"Accept-Language", b"Content-Length", b"Connection",
                         b"X-Forwarded-For", b"DNT", b"Sec-GPC", b"Accept", b"Referer",
                         b"Transfer-Encoding", b"Expect", b"Upgrade", b"X Bad", b"Bad:Name"])
VALUES = st.one_of(
    st.sampled_from([b"x", b" spaced  ", b"\tv\t", b"close", b"keep-alive", b"Close",
                     b"keep-alive, close", b"chunked", b"100-continue", b"12", b"0",
                     b"vid=3d0be300-cbd2-11e8-aa59-ffd128a54d91; a=1", b"https://ex.com",
                     b"Mozilla/5.0 (X11)", b"fr-CH, fr;q=0.9", b"\xc3\xa9t\xc3\xa9", b"a\x01b",
                     b"a" * 700, b"1"]),
    st.binary(max_size=12))
TARGETS = st.one_of(
    st.sampled_from([b"/tr/v1/m/a/ename/x", b"/img/v1/m/b", b"/rdr/v1/m/c?redirect=https://example.com/p",
                     b"/tr/v1?ename=q&ename=r", b"/tr/v1/k/%zz", b"/ping", b"/tr/v2/x/y",
                     b"/tr/v1/" + b"a/" * 400, b"http://h.example/tr/v1/m/abs", b"/img/v1/\x7f",
                     b"*", b"/tr/v1/m/\xff"]),
    st.builds(lambda a, b: b"/tr/v1/" + a + b"/" + b,
              st.text("abc%2F+", max_size=6).map(str.encode),
              st.text("xyz%41", max_size=6).map(str.encode)))


@st.composite
def requests(draw):
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD", b"POST", b"OPTIONS", b"PUT", b"get"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]))
    head = method + b" " + draw(TARGETS) + b" " + version + b"\r\n"
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=5))
    if draw(st.integers(0, 3)):
        headers.insert(draw(st.integers(0, len(headers))), (b"Host", b"x"))
    body = b""
    if method == b"POST":
        body = draw(st.sampled_from([b'{"m": "post", "uid": 7}', b"[1]", b"{bad", b""]))
        if draw(st.integers(0, 4)):
            headers.append((b"Content-Length", str(len(body)).encode()))
    for name, value in headers:
        sep = draw(st.sampled_from([b": ", b":", b":  "]))
        head += name + sep + value + draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    return head + b"\r\n" + body


@st.composite
def streams(draw):
    data = b"".join(draw(st.lists(requests(), min_size=1, max_size=4)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    chunks, start = [], 0
    for cut in cuts + [len(data)]:
        if cut > start:
            chunks.append(data[start:cut])
            start = cut
    return chunks


@settings(max_examples=int(os.environ.get("SCAN_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(chunks=streams())
def test_scanned_and_httptools_paths_answer_the_same(tmp_path_factory, chunks):
    tmp_path = tmp_path_factory.mktemp("scan")
    out_scan, rec_scan, out_parsed, rec_parsed = run_both(tmp_path, chunks)
    assert out_scan == out_parsed
    assert rec_scan == rec_parsed


def test_plain_requests_are_scanned_not_parsed(tmp_path):
    """The fast path really is taken for a plain GET (else the parity test
    above would compare httptools with itself)."""
    async def main():
        stack = Stack(str(tmp_path), True, asyncio.get_running_loop())
        calls = []
        stack.conn.parser = type("Spy", (), {"feed_data": lambda self, d: calls.append(d)})()
        out = await stack.feed([b"GET /tr/v1/m/a HTTP/1.1\r\nHost: x\r\n\r\n"
                                b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"])
        return out, calls
    out, calls = uvloop.run(main())
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Set-Cookie: vid=" in out
    assert calls == [b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"]     # /ping: not ours
