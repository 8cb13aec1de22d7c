"""Fuzzing the running server with raw HTTP bytes.

Two parts, both against one real collector over real sockets:
- the corpus: every file in tests/fuzz/corpus is one raw request (a case that
  once was or could be trouble); each is replayed every run;
- generated requests (hypothesis): request lines, headers and bodies made of
  arbitrary bytes around the tracker routes, plus pure garbage.
Whatever arrives, the server answers with an HTTP status line (or closes), a
4xx rather than a 5xx, no worker dies, and the node keeps serving.
"""
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import Collector

pytestmark = pytest.mark.integration
CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "fuzz", "corpus")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    c = Collector(str(tmp_path_factory.mktemp("fuzz")), {"MaxBodyBytes": 4096,
                                                          "MaxHeaderBytes": 4096})
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


@pytest.mark.parametrize("name", sorted(os.listdir(CORPUS)))
def test_corpus(server, name):
    c, _ = server
    with open(os.path.join(CORPUS, name), "rb") as fh:
        check_answer(exchange(c.port, fh.read()), required=True)
    assert c.get("/ping")[0] == 200


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
