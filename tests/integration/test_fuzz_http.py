"""Fuzzing the running server with raw HTTP bytes.

Two parts, both against one real collector over real sockets:
- the corpus: every ``NAME.http`` in tests/fuzz/corpus is one raw request (a
  case that once was or could be trouble), replayed every run and checked
  against its ``NAME.expect`` (tests/fuzz/README.md): the status, headers
  that must or must not be in the answer, whether the connection must close
  or go on, and how many events the request stored;
- generated requests (hypothesis): request lines, headers and bodies made of
  arbitrary bytes around the tracker routes, plus pure garbage: whatever
  arrives, the server answers with an HTTP status line (or closes), a 4xx
  rather than a 5xx, no worker dies, and the node keeps serving.

The collector runs one worker, so a tracked request sent after a case is
stored after anything the case stored: the case's events are counted once
that marker request is in the store (no sleeps, no guessing).
"""
import json
import os
import re
import socket
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import Collector, wait_for

pytestmark = pytest.mark.integration
CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "fuzz", "corpus")
CASES = sorted(name[:-len(".http")] for name in os.listdir(CORPUS) if name.endswith(".http"))
PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    c = Collector(str(tmp_path_factory.mktemp("fuzz")), {"MaxBodyBytes": 4096,
                                                          "MaxHeaderBytes": 4096}, workers=1)
    c.start()
    pids = c.worker_pids()
    yield c, pids
    assert c.worker_pids() == pids, "a worker died during fuzzing"
    assert c.stop() == 0


def exchange(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass      # the server may answer and close before we finish sending
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def check_answer(reply, required=False):
    if not reply and not required:
        return          # closed without an answer (e.g. nothing parseable arrived)
    assert reply.startswith(b"HTTP/1.1 "), reply[:80]
    status = int(reply[9:12])
    assert status < 500, reply[:200]


# ---- the corpus ---------------------------------------------------------------
def load_case(name):
    with open(os.path.join(CORPUS, name + ".http"), "rb") as fh:
        raw = fh.read()
    with open(os.path.join(CORPUS, name + ".expect")) as fh:
        expect = json.load(fh)
    return raw, expect


def read_reply(reader, head_only):
    """One HTTP/1.1 answer from ``reader`` (a socket's buffered file):
    (status, [(name, value)], body, head text), or None at end of stream."""
    line = reader.readline(65537)
    if not line:
        return None
    assert line.startswith(b"HTTP/1.1 "), f"not an HTTP/1.1 status line: {line[:80]!r}"
    status, head, headers = int(line[9:12]), line.decode("latin-1"), []
    while True:
        line = reader.readline(65537)
        head += line.decode("latin-1")
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    fields = dict(headers)
    if head_only or status in (204, 304) or status < 200:
        body = b""
    elif "content-length" in fields:
        body = reader.read(int(fields["content-length"]))
    else:
        assert "chunked" not in fields.get("transfer-encoding", ""), "chunked answer"
        body = reader.read()            # delimited by the close
    return status, headers, body, head


def closes_after_answer(sock, reader, wait=3.0):
    """True when the server closes the connection (sending nothing more)."""
    sock.settimeout(wait)
    try:
        extra = reader.read1(65536)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    assert not extra, f"more bytes after the answer: {extra[:200]!r}"
    return True


def still_serves(sock, reader):
    """Send /ping on the same connection: True if it is answered "pong",
    False if the connection turns out closed."""
    try:
        sock.sendall(PING)
        reply = read_reply(reader, head_only=False)
    except (BrokenPipeError, ConnectionResetError):
        return False
    if reply is None:
        return False
    assert reply[0] == 200 and reply[2] == b"pong", reply[3] + repr(reply[2][:200])
    return True


def choose(expect, status):
    """The expected answer for ``status`` (a case may allow several)."""
    for answer in expect.get("any_of", [expect]):
        if answer["status"] == status:
            return answer
    return None


def check_head(name, why, answer, headers, body, head):
    fields = dict(headers)
    for field, pattern in answer.get("headers", {}).items():
        value = fields.get(field.lower())
        assert value is not None and re.fullmatch(pattern, value), \
            f"{name}: header {field} should match {pattern!r} ({why})\n{head}"
    for line in answer.get("forbidden_headers", []):
        bad = [f"{n}: {v}" for n, v in headers if f"{n}: {v}".lower().startswith(line.lower())]
        assert not bad, f"{name}: forbidden header {bad} in the answer ({why})\n{head}"
    if "body" in answer:
        assert body == answer["body"].encode(), f"{name}: body {body[:200]!r} ({why})"


def settled(c):
    """The storage order (ev.n; the events view has no rowid) of the last
    event once everything accepted so far is stored: a marker event is sent
    and waited for (one worker: what it accepted before the marker is stored
    before it). Returns (n, marker)."""
    marker = uuid.uuid4().hex
    assert c.get(f"/tr/v1/mk/{marker}")[0] == 200

    def marker_row():
        rows = c.rows("SELECT n, params FROM ev ORDER BY n DESC LIMIT 50")
        return next((r["n"] for r in rows if marker in (r["params"] or "")), None)
    assert wait_for(marker_row), "marker event not stored"
    return marker_row(), marker


def events_between(c, before):
    """Params of the events stored after ``before`` (ev.n) and before a new marker."""
    after, marker = settled(c)
    return [json.loads(r["params"] or "{}") for r in c.rows(
        "SELECT params FROM ev WHERE n > ? AND n < ?", before, after)]


@pytest.mark.parametrize("name", CASES)
def test_corpus(server, name):
    c, _ = server
    raw, expect = load_case(name)
    why = expect.get("why", "")
    before, _ = settled(c)
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        try:
            sock.sendall(raw)
        except OSError:
            pass        # the server may answer and close before it read everything
        reply = read_reply(reader, head_only=raw.startswith(b"HEAD "))
        assert reply is not None, f"{name}: closed without an answer ({why})"
        status, headers, body, head = reply
        answer = choose(expect, status)
        allowed = [a["status"] for a in expect.get("any_of", [expect])]
        assert answer is not None, f"{name}: status {status}, expected {allowed} ({why})\n{head}"
        check_head(name, why, answer, headers, body, head)
        if answer.get("close") is True:
            assert closes_after_answer(sock, reader), \
                f"{name}: the connection must close after the answer ({why})"
        elif answer.get("close") is False:
            assert still_serves(sock, reader), \
                f"{name}: the connection must go on after the answer ({why})"
        else:
            still_serves(sock, reader)      # either way, but answered right if it goes on
    stored = events_between(c, before)
    assert len(stored) == answer["stored"], \
        f"{name}: {len(stored)} events stored, expected {answer['stored']} ({why}): {stored}"
    for key, value in answer.get("event", {}).items():
        assert stored[0].get(key) == value, f"{name}: event params {stored[0]} ({why})"
    assert c.get("/ping")[0] == 200


def test_every_case_has_an_expectation():
    files = os.listdir(CORPUS)
    lonely = [f for f in files if f.endswith((".http", ".expect"))
              and f.rsplit(".", 1)[0] + (".expect" if f.endswith(".http") else ".http")
              not in files]
    assert not lonely, f"corpus files without their pair: {lonely}"
    for name in CASES:
        expect = load_case(name)[1]
        for answer in expect.get("any_of", [expect]):
            assert {"status", "stored"} <= set(answer), f"{name}.expect: status and stored"


TOKENS = st.sampled_from([b"/tr/v1/", b"/img/v1/", b"/rdr/v1/", b"/ping", b"/status", b"/",
                          b"/tr/v1/vid/", b"?redirect=", b"%", b"%ff", b"\x00", b"\r\n", b"/"])
path = st.lists(st.one_of(TOKENS, st.binary(max_size=12)), max_size=8).map(b"".join)
header = st.tuples(st.sampled_from([b"Cookie", b"User-Agent", b"Content-Length", b"Origin",
                                    b"Transfer-Encoding", b"Expect", b"X-Forwarded-For"]),
                   st.binary(max_size=40))
method = st.sampled_from([b"GET", b"POST", b"OPTIONS", b"HEAD", b"PUT", b"G\x00T"])


@st.composite
def request(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))                 # pure garbage
    head = draw(method) + b" " + draw(path) + b" HTTP/1.1\r\nHost: x\r\n"
    for name, value in draw(st.lists(header, max_size=4)):
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + draw(st.binary(max_size=200))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=request())
def test_generated_requests(server, data):
    c, _ = server
    check_answer(exchange(c.port, data))
