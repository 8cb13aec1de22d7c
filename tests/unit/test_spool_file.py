"""Spool file format, torn tails, acknowledgements and ownership."""
import os

import pytest

from engine.spool import (HEADER, SpoolFull, SpoolReader, SpoolWriter, find_orphans,
                          read_acks, read_records)


def writer(tmp_path, max_bytes=1 << 20, rotate=1 << 20):
    return SpoolWriter(str(tmp_path), ["0:sqlite", "1:nats"], max_bytes, rotate)


def commit(w, events):
    for e in events:
        w.append(e)
    _, data, group = w.take_group()
    w.write_group(data, group[-1][0])
    return group


def test_records_round_trip_in_order(tmp_path):
    w = writer(tmp_path)
    commit(w, [{"eid": "a", "n": 1}, {"eid": "b", "n": 2}])
    commit(w, [{"eid": "c", "params": {"x": "é"}}])
    records, clean = read_records(w.path)
    assert clean and records == [(1, {"eid": "a", "n": 1}), (2, {"eid": "b", "n": 2}),
                                 (3, {"eid": "c", "params": {"x": "é"}})]


@pytest.mark.parametrize("damage", ["cut", "garbage", "flip"])
def test_a_torn_tail_is_detected_and_skipped(tmp_path, damage):
    w = writer(tmp_path)
    commit(w, [{"eid": str(i)} for i in range(5)])
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
    reader = SpoolReader(w.path)
    records = list(reader)
    expected = 5 if damage == "garbage" else 4
    assert [e["eid"] for _, e in records] == [str(i) for i in range(expected)]
    assert reader.torn


def test_wrong_magic_or_version_is_refused(tmp_path):
    path = tmp_path / "x.spool"
    path.write_bytes(HEADER.pack(b"TRKSPOOL", 99, 0))
    with pytest.raises(ValueError, match="version-1"):
        SpoolReader(str(path))


def test_full_spool_refuses_before_writing(tmp_path):
    w = writer(tmp_path, max_bytes=2000)
    with pytest.raises(SpoolFull):
        for i in range(100):
            w.append({"eid": str(i), "pad": "x" * 50})
    assert w.seq < 100


def test_acks_and_rotation_remove_delivered_files(tmp_path):
    w = writer(tmp_path, rotate=100)
    first = w.path
    commit(w, [{"eid": str(i)} for i in range(10)])
    w.save_acks({"0:sqlite": 10})
    assert read_acks(first) == {"0:sqlite": 10, "1:nats": 0}   # nats still owes
    w.save_acks({"1:nats": 10})                                 # all delivered, big enough
    assert w.path != first and not os.path.exists(first)
    commit(w, [{"eid": "next"}])
    assert read_records(w.path)[0] == [(11, {"eid": "next"})]
    assert w.close() is False                                   # 11 not acknowledged
    assert os.path.exists(w.path) and read_acks(w.path) == {"0:sqlite": 10, "1:nats": 10}


def test_only_unowned_files_are_orphans(tmp_path):
    live = writer(tmp_path)
    commit(live, [{"eid": "live"}])
    dead = writer(tmp_path)
    commit(dead, [{"eid": "dead"}])
    dead.close()                          # owner gone: lock released, file kept
    found = find_orphans(str(tmp_path))
    assert [p for p, _ in found] == [dead.path]
    assert find_orphans(str(tmp_path)) == []       # now locked by the adopter
    for _, fd in found:
        os.close(fd)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".new")]
