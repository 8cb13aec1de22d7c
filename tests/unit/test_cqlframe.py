"""The native wire's frames (engine/store/sinks/cassandra/_cqlframe.pyx):
values encoded as the CQL v4 protocol and cassandra-driver's serializers say,
unset cells for sparse writes, EXECUTE/BATCH layout, and Cassandra's Murmur3
token (cassandra-driver's own C implementation is the reference)."""
import asyncio
import datetime
import os
import random
import struct
import uuid

import pytest
from cassandra import cqltypes
from cassandra.murmur3 import murmur3

from engine.store.sinks.cassandra import _cqlframe
from engine.store.sinks.cassandra.plan import Request, Write
from engine.store.sinks.cassandra.wire_native import NativeCodec

VARCHAR, BIGINT, BOOLEAN, COUNTER, DOUBLE, INT, TIMESTAMP, UUID, DATE = (
    0x0D, 0x02, 0x04, 0x05, 0x07, 0x09, 0x0B, 0x0C, 0x11)
POINT = ("udt", (DOUBLE, DOUBLE))
VIEW = ("udt", (INT, INT))
PARAMS = ("map", VARCHAR, VARCHAR)
TYPES = (VARCHAR, UUID, TIMESTAMP, INT, DOUBLE, BOOLEAN, DATE, PARAMS, POINT, VIEW, BIGINT)


def values_of(frame, start):
    """[short n][int len][bytes]* from ``start`` -> list of bytes|None|'unset'."""
    n, = struct.unpack_from(">H", frame, start)
    at, out = start + 2, []
    for _ in range(n):
        k, = struct.unpack_from(">i", frame, at)
        at += 4
        if k < 0:
            out.append(None if k == -1 else "unset")
            continue
        out.append(frame[at:at + k])
        at += k
    return out, at


def execute_values(frame, pid):
    version, flags, stream, opcode, length = struct.unpack_from(">BBhBi", frame, 0)
    assert (version, opcode, length) == (4, 0x0A, len(frame) - 9)
    k, = struct.unpack_from(">H", frame, 9)
    assert frame[11:11 + k] == pid
    consistency, qflags = struct.unpack_from(">HB", frame, 11 + k)
    values, end = values_of(frame, 11 + k + 3)
    return stream, consistency, qflags, values, frame[end:]


def test_every_column_type_encodes_as_cassandra_driver_serializes_it():
    vid = str(uuid.uuid4())
    ms = 1_800_000_000_123
    day = NativeCodec.day("2026-11-30")
    values = ["héllo", vid, NativeCodec.ts(ms), -7, 2.5, True, day, {"a": "b", "c": "ü"},
              NativeCodec.point([48.85, 2.35]), NativeCodec.view([1280, 720]), 2**40]
    p = _cqlframe.Prepared(b"\x01\x02", TYPES, (1,))
    frame = _cqlframe.frame(7, Request(None, [Write("t", values, 0)], False), {"t": p}, 6, 9)
    stream, consistency, flags, got, rest = execute_values(frame, b"\x01\x02")
    assert (stream, consistency, flags, rest) == (7, 6, 0x03, b"")
    v4 = 4
    udt = lambda *fields: b"".join(struct.pack(">i", len(f)) + f for f in fields)  # noqa: E731
    assert got == [
        cqltypes.UTF8Type.serialize("héllo", v4),
        cqltypes.UUIDType.serialize(uuid.UUID(vid), v4),
        cqltypes.DateType.serialize(datetime.datetime.fromtimestamp(ms / 1000,
                                                                    datetime.timezone.utc), v4),
        cqltypes.Int32Type.serialize(-7, v4),
        cqltypes.DoubleType.serialize(2.5, v4),
        cqltypes.BooleanType.serialize(True, v4),
        cqltypes.SimpleDateType.serialize(datetime.date(2026, 11, 30), v4),
        cqltypes.MapType.apply_parameters([cqltypes.UTF8Type, cqltypes.UTF8Type]).serialize(
            {"a": "b", "c": "ü"}, v4),
        udt(struct.pack(">d", 48.85), struct.pack(">d", 2.35)),
        udt(struct.pack(">i", 1280), struct.pack(">i", 720)),
        cqltypes.LongType.serialize(2**40, v4)]


def test_sparse_writes_leave_the_other_columns_unset_and_none_is_null():
    p = _cqlframe.Prepared(b"id", (VARCHAR, VARCHAR, INT, VARCHAR), (0,))
    w = Write("t", [(0, "k"), (2, 5), (3, None)], 0, sparse=True)
    frame = _cqlframe.frame(1, Request(None, [w], False), {"t": p}, 10, 9)
    _, _, _, got, _ = execute_values(frame, b"id")
    assert got == [b"k", "unset", struct.pack(">i", 5), None]


def test_a_batch_frame_names_its_type_statements_and_serial_consistency():
    p = _cqlframe.Prepared(b"ab", (BIGINT, UUID), (1,))
    vid = str(uuid.uuid4())
    writes = [Write("reqs", [n, vid], 0) for n in (1, 2, 3)]
    frame = _cqlframe.frame(300, Request(None, writes, True), {"reqs": p}, 6, 9)
    version, _, stream, opcode, length = struct.unpack_from(">BBhBi", frame, 0)
    assert (version, stream, opcode, length) == (4, 300, 0x0D, len(frame) - 9)
    kind, n = struct.unpack_from(">BH", frame, 9)
    assert (kind, n) == (2, 3)                  # a COUNTER batch of three
    at = 12
    for expect in (1, 2, 3):
        assert frame[at:at + 5] == b"\x01\x00\x02ab"
        got, at = values_of(frame, at + 5)
        assert got == [struct.pack(">q", expect), uuid.UUID(vid).bytes]
    assert frame[at:] == struct.pack(">HB", 6, 0)
    conditional = Request(None, writes[:2], False)
    conditional.conditional = True
    frame = _cqlframe.frame(1, conditional, {"reqs": p}, 6, 9)
    assert frame[9] == 1 and frame[-5:] == struct.pack(">HBH", 6, 0x10, 9)


@pytest.mark.parametrize("bad", ["not-a-uuid", str(uuid.uuid4())[:-1], 17])
def test_a_value_the_column_cannot_take_is_an_error_and_the_buffer_stays_usable(bad):
    p = _cqlframe.Prepared(b"id", (UUID,), (0,))
    with pytest.raises(_cqlframe.CqlValueError):
        _cqlframe.frame(1, Request(None, [Write("t", [bad], 0)], False), {"t": p}, 6, 9)
    with pytest.raises(_cqlframe.CqlValueError, match="2 values for 1 columns"):
        _cqlframe.frame(1, Request(None, [Write("t", ["a", "b"], 0)], False), {"t": p}, 6, 9)
    good = _cqlframe.frame(2, Request(None, [Write("t", [uuid.UUID(int=5).hex], 0)], False),
                           {"t": p}, 6, 9)
    assert execute_values(good, b"id")[3] == [uuid.UUID(int=5).bytes]


@pytest.mark.parametrize("text", [
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",      # the canonical form (put_uuid's fast path)
    "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",      # upper case
    "0f1e2d3c4b5a69788796a5b4c3d2e1f0",          # no dashes
    "0f1e-2d3c-4b5a-6978-8796-a5b4-c3d2-e1f0",   # dashes elsewhere
    "0-f1e2d3c4b5a69788796a5b4c3d2e1f0",          # a dash inside a byte's two digits
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-",     # a dash after the last digit
])
def test_uuid_text_in_every_form_uuid_accepts_encodes_its_16_bytes(text):
    p = _cqlframe.Prepared(b"id", (UUID,), (0,))
    frame = _cqlframe.frame(1, Request(None, [Write("t", [text], 0)], False), {"t": p}, 6, 9)
    assert execute_values(frame, b"id")[3] == [uuid.UUID(text).bytes]


@pytest.mark.parametrize("bad", [
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",      # canonical shape, a digit that is not hex
    "g0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f\udc80",  # a lone surrogate: no UTF-8 at all
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1\u00e9",   # non-ASCII
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",       # 31 digits
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f00",     # 33 digits
    "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 ",     # a space
])
def test_uuid_text_that_is_not_one_is_an_error(bad):
    p = _cqlframe.Prepared(b"id", (UUID,), (0,))
    with pytest.raises(_cqlframe.CqlValueError, match="not a uuid"):
        _cqlframe.frame(1, Request(None, [Write("t", [bad], 0)], False), {"t": p}, 6, 9)


def test_token_is_cassandras_murmur3_for_every_tail_length_and_high_bytes():
    rnd = random.Random(17)
    keys = [bytes(rnd.getrandbits(8) for _ in range(n)) for n in range(70) for _ in range(20)]
    keys += [b"\xff" * n for n in range(40)] + [os.urandom(16) for _ in range(200)]
    assert [_cqlframe.token(k) for k in keys] == [murmur3(k) for k in keys]


def test_routing_key_is_the_value_or_the_composite_form():
    vid = str(uuid.uuid4())
    one = _cqlframe.Prepared(b"i", (UUID, VARCHAR), (0,))
    assert _cqlframe.routing_key(one, Write("t", [vid, "x"], 0)) == uuid.UUID(vid).bytes
    two = _cqlframe.Prepared(b"i", (BIGINT, VARCHAR, DATE), (1, 2))
    w = Write("t", [(1, "ip"), (2, 5)], 0, sparse=True)
    assert _cqlframe.routing_key(two, w) == (b"\x00\x02ip\x00" + b"\x00\x04"
                                             + struct.pack(">I", 2**31 + 5) + b"\x00")


def test_answers_reach_their_requests_however_the_bytes_arrive():
    """native_conn.CqlConnection.data_received (through _cqlframe.dispatch):
    frames split anywhere, several in one read, a server event, a warning."""
    from engine.store.sinks.cassandra.native_conn import CqlConnection

    class Got:
        def __init__(self):
            self.answers = []

        def answer(self, i, opcode, body):
            self.answers.append((i, opcode, body))

    def frame(stream, opcode, body, flags=0):
        return struct.pack(">BBhBi", 0x84, flags, stream, opcode, len(body)) + body

    warning = struct.pack(">H", 1) + struct.pack(">H", 4) + b"big!"
    stream_bytes = (frame(2, 8, b"\x00\x00\x00\x01") + frame(-1, 0x0C, b"event")
                    + frame(1, 0, struct.pack(">iH", 0x1000, 3) + b"bad")
                    + frame(3, 8, warning + b"\x00\x00\x00\x01", flags=0x08))

    async def run(cuts):
        conn, got = CqlConnection("h"), Got()
        streams = [conn.take((got, i)) for i in range(3)]
        assert streams == [1, 2, 3]
        at = 0
        for cut in cuts + [len(stream_bytes)]:
            conn.data_received(stream_bytes[at:cut])
            at = cut
        assert not conn.handlers and sorted(conn.free[-3:]) == [1, 2, 3] and not conn.inbox
        return got.answers
    for cuts in ([], [1], [5, 9, 10, 30], list(range(1, len(stream_bytes)))):
        assert asyncio.run(run(cuts)) == [
            (1, 8, b"\x00\x00\x00\x01"), (0, 0, struct.pack(">iH", 0x1000, 3) + b"bad"),
            (2, 8, b"\x00\x00\x00\x01")]


def test_the_ring_names_a_tokens_replicas_first_owner_first():
    from engine.store.sinks.cassandra.wire_native import Ring
    ring = Ring([300, -100, 100, 200, 0, -200], ["c", "b", "a", "b", "a", "c"])
    # sorted: -200 c, -100 b, 0 a, 100 a, 200 b, 300 c; a token belongs to the
    # first ring token at or above it, wrapping past the last
    assert ring.replicas(-150) == ("b", "a", "c")
    assert ring.replicas(0) == ("a", "b", "c")
    assert ring.replicas(50) == ("a", "b", "c")
    assert ring.replicas(301) == ring.replicas(-10**18) == ("c", "b", "a")
    assert Ring([], []).replicas(5) == ()
