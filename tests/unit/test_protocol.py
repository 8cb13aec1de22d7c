"""The connection protocol with a fake transport: no sockets, exact bytes."""
import pytest

from engine.http.protocol import ConnectionRegistry, HttpConnection
from engine.http.stream import Stream
from engine.http import responses


class Limits:
    idle_timeout = 5.0
    read_timeout = 2.0
    write_timeout = 2.0
    max_header_bytes = 256
    max_body_bytes = 64


class FakeTransport:
    def __init__(self):
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name):
        return ("10.1.2.3", 5555) if name == "peername" else None

    def write(self, data):
        self.out += data

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True


class EchoApp:
    """Answers each request with its method, URL and body."""
    committer = None     # memory durability: nothing waits for a spool commit

    def __init__(self):
        self.seen = []

    def admit_connection(self, conn):
        return None

    def connection_closed(self, conn):
        pass

    def route_head(self, conn, req):
        return None

    def handle(self, conn, req, keep):
        self.seen.append(req)
        body = b"%s %s %s" % (req.method, req.url, req.body or b"")
        return responses.build(200, conn.registry.date, body=body, close=not keep)

    def error_response(self, status, text):
        return responses.simple(status, responses.DateHeader(), text, close=True)

    def count_error(self, status):
        pass

    def internal_error(self, conn, exc):
        raise AssertionError(exc)


@pytest.fixture
def conn():
    registry = ConnectionRegistry(Limits())
    c = HttpConnection(EchoApp(), registry)
    c.connection_made(FakeTransport())
    return c


def test_request_split_across_reads(conn):
    for piece in (b"GET /a", b"b?c=d HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
        conn.data_received(piece)
    out = bytes(conn.transport.out)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"GET /ab?c=d ")
    assert not conn.transport.closed and conn.client_ip == "10.1.2.3"


def test_pipelined_requests_in_order(conn):
    conn.data_received(b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                       b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.0\r\n\r\n")
    out = bytes(conn.transport.out)
    assert out.index(b"POST /1 abc") < out.index(b"GET /2") < out.index(b"GET /3")
    assert conn.transport.closed          # HTTP/1.0 without keep-alive


def test_header_limit_431(conn):
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 300 + b"\r\n\r\n")
    assert conn.transport.out.startswith(b"HTTP/1.1 431 ") and conn.transport.closed


def test_target_limit_414(conn):
    conn.data_received(b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.transport.out.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert conn.transport.closed and conn.app.seen == []


def test_http11_without_host_is_400_http10_is_fine(conn):
    conn.data_received(b"GET /a HTTP/1.0\r\n\r\n")
    assert conn.transport.out.startswith(b"HTTP/1.1 200 ")
    registry = ConnectionRegistry(Limits())
    c = HttpConnection(EchoApp(), registry)
    c.connection_made(FakeTransport())
    c.data_received(b"GET /a HTTP/1.1\r\nUser-Agent: x\r\n\r\n")
    assert c.transport.out.startswith(b"HTTP/1.1 400 ") and b"missing Host" in c.transport.out
    assert c.transport.closed and c.app.seen == []


def test_body_limit_413_by_length_and_by_chunks(conn):
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    assert conn.transport.out.startswith(b"HTTP/1.1 413 ")
    registry = ConnectionRegistry(Limits())
    c = HttpConnection(EchoApp(), registry)
    c.connection_made(FakeTransport())
    c.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"20\r\n" +
                    b"x" * 32 + b"\r\n" + b"30\r\n" + b"y" * 48 + b"\r\n0\r\n\r\n")
    assert c.transport.out.startswith(b"HTTP/1.1 413 ")


def test_garbage_is_400_and_closed(conn):
    conn.data_received(b"\x00\x01\x02 nonsense\r\n\r\n")
    assert conn.transport.out.startswith(b"HTTP/1.1 400 ") and conn.transport.closed


def test_deadlines(conn):
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")            # half a request
    conn.registry.sweep(conn.deadline + 1)
    assert conn.transport.out.startswith(b"HTTP/1.1 408 ") and conn.transport.closed


def test_idle_connection_closed_silently():
    registry = ConnectionRegistry(Limits())
    c = HttpConnection(EchoApp(), registry)
    c.connection_made(FakeTransport())
    registry.sweep(Limits.idle_timeout + 1)
    assert c.transport.closed and c.transport.out == b""


def test_back_pressure_pauses_reading(conn):
    conn.pause_writing()
    assert not conn.transport.reading
    conn.resume_writing()
    assert conn.transport.reading


def test_expect_continue(conn):
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert conn.transport.out == responses.CONTINUE
    conn.data_received(b"hi")
    assert conn.transport.out.endswith(b"POST / hi")


class FakeStream(Stream):
    """A stream answer: records its body, finishes when the test says."""
    def __init__(self, name):
        self.name, self.body, self.eof, self.conn = name, b"", False, None

    def feed(self, data):
        self.body += data

    def feed_eof(self):
        self.eof = True

    def start(self, conn):
        self.started, self.conn = True, conn
        conn.transport.write(b"<%s:" % self.name)

    def finish(self, keep=True):
        self.conn.transport.write(b"%s>" % self.body)
        self.conn.stream_finished(self, keep)


class StreamApp(EchoApp):
    """Requests under /s/ are streams (like proxied ones)."""
    def __init__(self):
        super().__init__()
        self.streams = []

    def route_head(self, conn, req):
        if req.url.startswith(b"/s/"):
            self.streams.append(FakeStream(req.url[3:]))
            return self.streams[-1]
        return None


@pytest.fixture
def sconn():
    registry = ConnectionRegistry(Limits())
    c = HttpConnection(StreamApp(), registry)
    c.connection_made(FakeTransport())
    return c


def test_streams_and_plain_answers_keep_request_order(sconn):
    app, out = sconn.app, sconn.transport.out
    sconn.data_received(b"POST /s/one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                        b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"POST /s/two HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nxy")
    one, two = app.streams
    assert one.started and one.body == b"abc" and one.eof
    assert not two.started and two.body == b"xy"     # fed (bodies are not size-capped)
    assert bytes(out) == b"<one:"                     # /plain waits behind /s/one
    one.finish()
    assert bytes(out).startswith(b"<one:abc>HTTP/1.1 200 OK")
    assert b"GET /plain" in bytes(out) and bytes(out).endswith(b"<two:")
    sconn.data_received(b"z" * 98)
    assert two.eof and len(two.body) == 100
    two.finish(keep=False)
    assert sconn.transport.closed


def test_a_closed_connection_closes_its_streams(sconn):
    closed = []
    sconn.data_received(b"GET /s/a HTTP/1.1\r\nHost: x\r\n\r\nGET /s/b HTTP/1.1\r\nHost: x\r\n\r\n")
    for st in sconn.app.streams:
        st.close = lambda st=st: closed.append(st.name)
    sconn.connection_lost(None)
    assert sorted(closed) == [b"a", b"b"]
