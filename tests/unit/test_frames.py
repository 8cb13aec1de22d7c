"""The store reader's record framing: engine/_frames.pyx's ``take`` against its
Python twin (``FileCursor._take``) on real record streams, whole, cut and
damaged, read through buffers of any size; and a file with a record bigger
than a read block through both."""
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import _frames, spool
from engine.spool import HEADER, MAGIC, FileCursor


def frame(seq, payload):
    body = struct.pack("<Q", seq) + payload
    return struct.pack("<II", len(payload), zlib.crc32(body)) + body


@st.composite
def streams(draw):
    seq, data = draw(st.integers(0, 5)), b""
    for payload in draw(st.lists(st.binary(max_size=300), max_size=12)):
        seq += draw(st.integers(1, 3))          # seqs increase; gaps allowed
        data += frame(seq, payload)
    damage = draw(st.sampled_from(["none", "cut", "flip", "garbage"]))
    if damage == "cut" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]
    elif damage == "garbage":
        data += draw(st.binary(max_size=40))
    return data


@settings(max_examples=400, deadline=None)
@given(data=streams(), start=st.integers(0, 30), window=st.integers(0, 4000),
       base=st.integers(8, 1 << 40), slack=st.integers(-50, 50), most=st.integers(0, 15),
       seq=st.integers(0, 8), skip_to=st.integers(0, 20))
def test_compiled_framing_takes_what_the_twin_takes(data, start, window, base, slack, most,
                                                    seq, skip_to):
    buf = data[start:start + window]
    limit = base + len(data) - start + slack
    got, want = [], []
    assert _frames.take(buf, base, limit, most, seq, skip_to, got) == \
        FileCursor._take(buf, base, limit, most, seq, skip_to, want)
    assert got == want


@pytest.mark.parametrize("pure", [False, True])
def test_a_record_bigger_than_a_read_block_is_read_alone(tmp_path, monkeypatch, pure):
    if pure:
        monkeypatch.setattr(spool, "_frames", None)
    big = b"x" * (spool.READ_BLOCK + 100)
    path = tmp_path / "w1-t-1.spool"
    path.write_bytes(HEADER.pack(MAGIC, 2, 0) + frame(1, b"a") + frame(2, big) + frame(3, b"c"))
    cursor = FileCursor(str(path))
    records = cursor.read(cursor.size(), 10)
    assert [(s, len(p)) for s, p, _ in records] == [(1, 1), (2, len(big)), (3, 1)]
    assert records[-1][2] == cursor.size() and not cursor.torn
