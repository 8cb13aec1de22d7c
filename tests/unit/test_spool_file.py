"""Spool files: format (v2 records, v1 JSON still read), torn tails, rotation,
positions, and how the store stage tails live and final files."""
import os
import time
import uuid

import orjson
import pytest

from engine import record
from engine.board import Board
from engine.spool import (HEADER, MAGIC, FileCursor, SpoolFormatError, SpoolFull, SpoolWriter,
                          encode_record, is_final, read_position, read_records, write_position)
from engine.store.tail import LOCK_TEST_EVERY, SpoolTail, count_frames


def event(n, **extra):
    ev = {"eid": str(uuid.uuid1()), "vid": str(uuid.uuid4()), "sid": str(uuid.uuid4()),
          "created": 1_700_000_000_000 + n, "first": False, "ip": "10.0.0.1",
          "params": {"n": str(n)}}
    ev.update(extra)
    return ev


def writer(tmp_path, max_bytes=1 << 20, rotate=1 << 20, publish=None):
    return SpoolWriter(str(tmp_path), max_bytes, rotate, publish=publish)


def commit(w, events):
    for e in events:
        w.append(record.encode(e))
    _, data, _count = w.take_group()
    w.write_group(data)


def test_records_round_trip_in_order(tmp_path):
    w = writer(tmp_path)
    events = [event(i) for i in range(3)] + [event(3, params={"x": "é"}, url="https://a/")]
    commit(w, events[:2])
    commit(w, events[2:])
    records, clean = read_records(w.path)
    assert clean and [seq for seq, _ in records] == [1, 2, 3, 4]
    assert [ev for _, ev in records] == [record.canonical(e) for e in events]


@pytest.mark.parametrize("damage", ["cut", "garbage", "flip"])
def test_a_torn_tail_is_detected_and_skipped(tmp_path, damage):
    w = writer(tmp_path)
    commit(w, [event(i) for i in range(5)])
    w.close()
    size = os.path.getsize(w.path)
    with open(w.path, "r+b") as fh:
        if damage == "cut":
            fh.truncate(size - 3)                     # last record half written
        elif damage == "garbage":
            fh.seek(size)
            fh.write(b"\x07\x00\x00\x00garbage-garbage")
        else:
            fh.seek(size - 2)
            fh.write(b"XX")                           # payload bytes changed: crc fails
    cursor = FileCursor(w.path)
    records = cursor.read(cursor.size(), 100)
    assert len(records) == (5 if damage == "garbage" else 4)
    assert cursor.torn


def test_version_one_json_files_are_still_read(tmp_path):
    path = tmp_path / "w1-1.spool"
    old = [{"eid": "a", "n": 1}, {"eid": "b", "n": 2}]
    path.write_bytes(HEADER.pack(MAGIC, 1, 0) + b"".join(
        encode_record(i + 1, orjson.dumps(e)) for i, e in enumerate(old)))
    assert read_records(str(path)) == ([(1, old[0]), (2, old[1])], True)


def test_unknown_magic_or_version_is_refused(tmp_path):
    path = tmp_path / "x.spool"
    path.write_bytes(HEADER.pack(MAGIC, 99, 0))
    with pytest.raises(SpoolFormatError, match="version-1 or -2"):
        FileCursor(str(path))


def test_full_spool_refuses_before_writing(tmp_path):
    w = writer(tmp_path, max_bytes=2000)
    with pytest.raises(SpoolFull):
        for i in range(100):
            w.append(record.encode(event(i, url="x" * 50)))
    assert w.seq < 100


def test_rotation_closes_the_old_file_and_publishes_the_new(tmp_path):
    published = []
    w = writer(tmp_path, max_bytes=1 << 20, rotate=600,
               publish=lambda n, committed: published.append((n, committed)))
    first = w.path
    assert not is_final(first)                        # locked while written
    commit(w, [event(i) for i in range(10)])          # past rotate_bytes
    assert w.path != first and is_final(first) and not is_final(w.path)
    assert published[0] == (1, HEADER.size) and published[-1] == (2, HEADER.size)
    assert (1, os.path.getsize(first)) in published
    commit(w, [event(10)])
    assert [s for s, _ in read_records(w.path)[0]] == [11]   # seqs go on across files
    w.refresh_usage()
    assert w.bytes_used == os.path.getsize(first) + os.path.getsize(w.path)
    os.unlink(first)                                   # the store deleted it
    w.refresh_usage()
    assert w.bytes_used == os.path.getsize(w.path)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".new")]


def test_positions_and_wave_one_acks(tmp_path):
    path = str(tmp_path / "w1-1.spool")
    assert read_position(path, "0-sqlite", "0:sqlite") == (0, None)
    (tmp_path / "w1-1.spool.acks").write_bytes(orjson.dumps({"0:sqlite": 7}))
    assert read_position(path, "0-sqlite", "0:sqlite") == (7, None)
    write_position(path, "0-sqlite", 9, 1234)
    assert read_position(path, "0-sqlite", "0:sqlite") == (9, 1234)
    (tmp_path / "w1-1.spool.ack-1-nats").write_bytes(b"{not json")
    assert read_position(path, "1-nats") == (0, None)      # damaged: replay from the start


def test_a_cursor_resumes_at_a_position_or_skips_by_seq(tmp_path):
    w = writer(tmp_path)
    commit(w, [event(i) for i in range(6)])
    w.close()
    whole = FileCursor(w.path).read(1 << 30, 100)
    seq3, end3 = whole[2][0], whole[2][2]
    assert [r[0] for r in FileCursor(w.path, end3, seq3).read(1 << 30, 100)] == [4, 5, 6]
    skipping = FileCursor(w.path, None, 3)                  # wave-1 ack: seq only
    assert [r[0] for r in skipping.read(1 << 30, 100)] == [4, 5, 6] and skipping.skipped == 3
    assert count_frames(skipping.fd, HEADER.size, os.path.getsize(w.path)) == (
        6, os.path.getsize(w.path))


def tail_of(tmp_path, board, sids=(("0-sqlite", "0:sqlite"),)):
    return SpoolTail(str(tmp_path), sids[0][0], sids[0][1], list(sids), lambda pid: True, board)


def test_a_live_file_is_read_up_to_the_committed_offset_only(tmp_path):
    board = Board(4)
    slot = board.slot(board.take())
    slot.claim("http", 0)
    w = writer(tmp_path, publish=slot.set_spool)
    commit(w, [event(i) for i in range(3)])
    committed = w.size
    w.append(record.encode(event(3)))                  # written but not yet published:
    _, data, _ = w.take_group()                        # as if the fsync were under way
    w.publish = lambda n, c: None
    w.write_group(data)
    tail = tail_of(tmp_path, board)
    tail.scan(force=True)
    [(f, events, records, seq, end, count)] = tail.read(100)
    assert [r[0] for r in records] == [1, 2, 3] and (seq, end, count) == (3, committed, 3)
    assert [e["created"] for e in events] == [1_700_000_000_000 + i for i in range(3)]
    assert tail.read(100) == []
    slot.set_spool(1, w.size)                          # the group is durable
    assert [chunk[3] for chunk in tail.read(100)] == [4]
    w.close()                                          # final: read to the end, done
    time.sleep(LOCK_TEST_EVERY)                        # (a caught-up file's lock is tested
    assert tail.read(100) == [] and tail.files[w.path].done_reading    # now and then)


def test_a_record_that_does_not_decode_is_skipped_and_its_position_passed(tmp_path):
    w = writer(tmp_path)
    commit(w, [event(0)])
    w.append(b"\x7fnot a record")                     # framed (its CRC holds), not an event
    commit(w, [event(2)])
    w.close()
    tail = tail_of(tmp_path, None)
    tail.scan(force=True)
    [(f, events, records, seq, end, count)] = tail.read(100)
    assert [e["created"] for e in events] == [1_700_000_000_000, 1_700_000_000_002]
    assert [r[0] for r in records] == [1, 3] and (seq, count) == (3, 3)
    assert end == os.path.getsize(w.path)


def test_a_final_file_is_deleted_once_every_sink_has_written_it(tmp_path):
    w = writer(tmp_path)
    commit(w, [event(i) for i in range(4)])
    w.close()
    sids = (("0-sqlite", "0:sqlite"), ("1-nats", "1:nats"))
    tail = tail_of(tmp_path, None, sids)
    tail.scan(force=True)
    [(f, _events, _records, seq, end, count)] = tail.read(100)
    f.in_flight += 1
    tail.save_positions(tail.note_written({f: (seq, end, count)}))
    tail.read(100)
    [done] = tail.finishable()
    assert tail.finish(done) is False and os.path.exists(w.path)    # nats has not
    assert tail.lag(0) == (0, 0.0)
    write_position(w.path, "1-nats", 4, os.path.getsize(w.path))
    other = tail_of(tmp_path, None, sids[::-1])
    other.scan(force=True)
    other.read(100)
    [again] = other.finishable()
    assert other.finish(again) is True
    assert os.listdir(tmp_path) == []


def test_lag_counts_unwritten_records_and_their_age(tmp_path):
    w = writer(tmp_path)
    commit(w, [event(i) for i in range(5)])
    w.close()
    tail = tail_of(tmp_path, None)
    tail.scan(force=True)
    created = 1_700_000_000_000
    assert tail.lag(created + 2500) == (5, 2.5)
    [(f, _events, _records, seq, end, count)] = tail.read(2)
    f.in_flight += 1
    tail.note_written({f: (seq, end, count)})
    assert tail.lag(created + 2500) == (3, 2.498)      # the oldest left is event 2 (+2 ms)


def test_a_compiled_decoded_event_is_left_to_reference_counting():
    # No cycle can pass through an event (texts, numbers, a dict of texts,
    # lists of two numbers), so the compiled decode untracks it and its lists:
    # a store process's young collections then skip every batched event.
    import gc
    from engine import _parse
    data = record.encode(event(1, latlon=[48.85, 2.35], vp=[390, 844], url="/pricing"))
    ev = _parse.decode(data)
    assert ev == record.decode(data)
    assert ev["latlon"] == [48.85, 2.35] and ev["vp"] == [390, 844]
    assert not gc.is_tracked(ev) and not gc.is_tracked(ev["latlon"])
    assert not gc.is_tracked(ev["vp"])
    ev["extra"] = [1]          # a container put in later tracks the dict again
    assert gc.is_tracked(ev)
