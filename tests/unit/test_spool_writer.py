"""The compiled spool writer (engine/ingest/_spool.pyx): its files, frames,
rotation, board publishing and the release of waiting answers, on a real
event loop and real files."""
import asyncio
import fcntl
import os
import struct
import subprocess
import sys
import zlib

import uvloop

from engine.board import Board, unpack_spool
from engine.http.protocol import ConnectionRegistry, HttpConnection
from engine.ingest._spool import SpoolWriter, crc32
from engine.store.tail import SpoolTail, count_frames


def frames(path):
    """[(seq, payload)] of a spool file, checking header and every CRC."""
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"TRKSPOOL" and struct.unpack("<II", data[8:16]) == (2, 0)
    out, i = [], 16
    while i < len(data):
        length, crc, seq = struct.unpack_from("<IIQ", data, i)
        payload = data[i + 16:i + 16 + length]
        assert len(payload) == length
        assert zlib.crc32(payload, zlib.crc32(struct.pack("<Q", seq))) == crc
        out.append((seq, payload))
        i += 16 + length
    return out


def locked(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def run(coro):
    return uvloop.run(coro)


def test_crc_is_zlibs():
    for data in (b"", b"a", b"x" * 7, b"y" * 8, bytes(range(256)) * 9):
        assert crc32(data) == zlib.crc32(data)
        assert crc32(data, 1234) == zlib.crc32(data, 1234)


def test_records_in_order_and_board_published(tmp_path):
    board = Board(4)
    slot = board.slot(board.take())
    slot.claim("http", 0)

    async def main():
        w = SpoolWriter(str(tmp_path), 1 << 24, board_address=slot.field_address("spool"),
                        interval_ms=0)
        w.start(asyncio.get_running_loop())
        settled = []
        w.on_settled = lambda ok, records: settled.append((ok, records))
        tickets = []
        for i in range(1000):
            tickets.append(w.append(b"event %d" % i))
            if i % 97 == 0:
                await asyncio.sleep(0)          # let groups form and settle
        await w.flush()
        path = w.path
        groups = w.groups
        w.close()
        return tickets, settled, path, groups

    tickets, settled, path, groups = run(main())
    assert all(t.settled and not t.failed for t in tickets)
    distinct = list(dict.fromkeys(id(t) for t in tickets))     # one ticket per group
    assert len(distinct) == len(settled) == groups > 1
    assert all(ok for ok, _ in settled) and sum(n for _, n in settled) == 1000
    assert frames(path) == [(i + 1, b"event %d" % i) for i in range(1000)]
    file_no, committed = unpack_spool(board.read(slot.number)[4])
    assert (file_no, committed) == (1, os.path.getsize(path))
    assert not locked(path)                     # closed: a store may read it to its end


def test_rotation_unlocks_the_old_file_and_seq_goes_on(tmp_path):
    board = Board(2)
    slot = board.slot(board.take())
    slot.claim("http", 0)
    payload = b"p" * 1000

    async def main():
        w = SpoolWriter(str(tmp_path), 1 << 20, rotate_bytes=1 << 16,
                        board_address=slot.field_address("spool"))
        w.start(asyncio.get_running_loop())
        for i in range(200):
            w.append(payload)
            await asyncio.sleep(0)
        await w.flush()
        live = w.path
        state = (locked(live), unpack_spool(board.read(slot.number)[4]))
        w.close()
        return live, state

    live, (was_locked, (file_no, committed)) = run(main())
    names = sorted(os.listdir(tmp_path), key=lambda n: int(n.split("-")[2].split(".")[0]))
    tags = {n.split("-")[1] for n in names}
    assert len(names) >= 2 and all(n.startswith(f"w{os.getpid()}-") for n in names)
    assert len(tags) == 1 and len(tags.pop()) == 8
    assert was_locked and os.path.basename(live) == names[-1]
    assert file_no == len(names) and committed == os.path.getsize(live)
    seqs = [seq for name in names for seq, _ in frames(os.path.join(tmp_path, name))]
    assert seqs == list(range(1, 201))
    for name in names[:-1]:                     # rotated files: past the threshold, whole
        assert os.path.getsize(os.path.join(tmp_path, name)) >= 1 << 16


class Limits:
    idle_timeout = read_timeout = write_timeout = 5.0
    max_header_bytes = 4096
    max_body_bytes = 4096


class Transport:
    """What a connection sees of a socket; like asyncio's, writes after
    close() go nowhere."""

    def __init__(self):
        self.out = bytearray()
        self.closed = False

    def get_extra_info(self, name):
        return ("10.0.0.1", 1) if name == "peername" else None

    def write(self, data):
        if not self.closed:
            self.out += data

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class App:
    fast = None

    def admit_connection(self, conn):
        return None

    def unavailable_response(self):
        return b"503"


def test_answers_wait_for_their_group(tmp_path):
    async def main():
        w = SpoolWriter(str(tmp_path), 1 << 24)
        w.start(asyncio.get_running_loop())
        conn = HttpConnection(App(), ConnectionRegistry(Limits()))
        conn.connection_made(Transport())
        ticket = w.append(b"e1")
        conn.answer(ticket, b"A1", True)
        conn.answer(None, b"B", True)           # behind A1: waits too
        before = bytes(conn.transport.out)
        await w.flush()
        return before, bytes(conn.transport.out), ticket

    before, after, ticket = run(main())
    assert before == b"" and after == b"A1B" and ticket.settled


def test_a_failed_group_answers_the_apps_503():
    from engine.http.protocol import Ticket
    conn = HttpConnection(App(), ConnectionRegistry(Limits()))
    conn.connection_made(Transport())
    ticket = Ticket()
    conn.answer(ticket, b"200 for e1", True)
    conn.answer(None, b"after", True)
    assert bytes(conn.transport.out) == b""
    ticket.settle(False)
    assert bytes(conn.transport.out) == b"503"   # and the connection closes


async def _settled_at(ticket, loop):
    """Loop time at which ``ticket``'s group settles."""
    done = loop.create_future()
    ticket.add_callback(lambda ok: done.done() or done.set_result(loop.time()))
    return await asyncio.wait_for(done, 30)


def test_a_record_finding_the_thread_idle_is_not_held_for_the_interval(tmp_path):
    """Below one group per interval a record goes at the end of its loop
    pass: its answer waits for a write, not for CommitIntervalMs."""
    async def main():
        loop = asyncio.get_running_loop()
        w = SpoolWriter(str(tmp_path), 1 << 24, durable=False, interval_ms=5000)
        w.start(loop)
        began = loop.time()
        settled = await _settled_at(w.append(b"alone"), loop)
        groups = w.groups
        await w.flush()
        w.close()
        return settled - began, groups

    waited, groups = run(main())
    assert groups == 1
    assert waited < 2.5         # half the interval: it was not held for it


def test_groups_start_at_most_once_per_interval(tmp_path):
    """Records arriving while the thread waits out the interval after a
    group gather into one group, started no sooner than an interval after
    the previous group started."""
    interval = 0.3

    async def main():
        loop = asyncio.get_running_loop()
        w = SpoolWriter(str(tmp_path), 1 << 24, durable=False, interval_ms=interval * 1000)
        w.start(loop)
        began = loop.time()
        first = w.append(b"a")
        await _settled_at(first, loop)
        second = w.append(b"b")
        await asyncio.sleep(0.01)
        third = w.append(b"c")          # a later loop pass, the same group
        second_at = await _settled_at(second, loop)
        await _settled_at(third, loop)
        groups = w.groups
        path = w.path
        w.close()
        return first, second, third, second_at - began, groups, path

    first, second, third, gap, groups, path = run(main())
    assert second is third and second is not first
    assert groups == 2
    assert gap >= interval - 0.002      # loop clock vs the thread's: both monotonic
    assert [p for _, p in frames(path)] == [b"a", b"b", b"c"]


def test_records_go_over_zeros_written_ahead_and_the_file_is_cut_back_at_close(tmp_path):
    """An fdatasync after an append also commits the file's new size; the
    writer extends its file with zeros ahead of the records instead, and cuts
    them off when it closes the file (rotation or stop)."""
    async def main():
        w = SpoolWriter(str(tmp_path), 1 << 26, rotate_bytes=1 << 22)
        w.start(asyncio.get_running_loop())
        for i in range(300):
            w.append(b"record %d " % i + b"x" * 200)
        await w.flush()
        path, durable = w.path, w.used
        with open(path, "rb") as fh:
            live = fh.read()
        w.close()
        return path, durable, live

    path, durable, live = run(main())
    assert durable == os.path.getsize(path)             # closed: its records only
    assert len(live) > durable and live[durable:] == bytes(len(live) - durable)
    assert [seq for seq, _ in frames(path)] == list(range(1, 301))


_CRASHING_WRITER = """
import asyncio, os, sys
import uvloop
from engine import _parse
from engine.ingest._spool import SpoolWriter

async def main():
    w = SpoolWriter(sys.argv[1], 1 << 26)
    w.start(asyncio.get_running_loop())
    ids = _parse.TimeUUIDGen()
    for i in range(int(sys.argv[2])):
        w.append(_parse.encode_track(b"/tr/v1/ename/view/m/C.%d" % i, None, None,
                                     "127.0.0.1", b"ua", None, None, 1_795_000_000_000 + i, ids))
    await w.flush()
    os._exit(0)             # no close: the file keeps the zeros written ahead

uvloop.run(main())
"""


def test_a_file_left_with_zeros_by_a_crash_is_read_to_its_last_record(tmp_path):
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(tmp_path), "500"], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    [name] = os.listdir(tmp_path)
    path = os.path.join(tmp_path, name)
    with open(path, "rb") as fh:
        data = fh.read()
    assert not locked(path) and data.endswith(bytes(1 << 16))      # zeros after the records
    fd = os.open(path, os.O_RDONLY)
    try:
        count, end = count_frames(fd, 16, len(data))
    finally:
        os.close(fd)
    assert count == 500 and data[end:] == bytes(len(data) - end)
    tail = SpoolTail(str(tmp_path), "0-sqlite", "0:sqlite", [("0-sqlite", "0:sqlite")],
                     lambda pid: True, None)
    tail.scan(force=True)
    assert tail.lag(1_795_000_000_000)[0] == 500
    [(f, events, records, seq, end_read, n)] = tail.read(1000)
    assert n == 500 and seq == 500 and end_read == end
    assert [e["ename"] for e in events[:2]] == ["view", "view"]
    assert f.cursor.torn and f.done_reading         # stopped at the zeros, as at a torn tail
    f.in_flight += 1
    tail.save_positions(tail.note_written({f: (seq, end_read, n)}))
    assert tail.lag(1_795_000_000_000) == (0, 0.0)
    [done] = tail.finishable()
    assert tail.finish(done) is True and os.listdir(tmp_path) == []
