"""The durable counter residue: what it keeps, who owns it, who adopts it."""
import fcntl
import os

from engine.store.sinks.counter_residue import CounterResidue, decode_items, encode_items

DAY = "2026-11-28"
VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"


def test_keys_of_every_table_round_trip():
    items = {("dailies", ("1.2.3.4", DAY)): 3, ("reqs", (VID,)): 2,
             ("outcomes", ("won", "cw$", "https://x/", DAY)): 1, ("counters", ("c1",)): 7}
    assert decode_items(encode_items(items)) == items


def test_files_of_the_tagged_format_read_as_fan_out_keys():
    # residues written when keys held dates and UUIDs, tagged in the JSON
    old = (b'[["dailies",["1.2.3.4",{"d":"2026-11-28"}],3],'
           b'["reqs",[{"u":"3d0be300-cbd2-11e8-aa59-ffd128a54d91"}],2]]')
    assert decode_items(old) == {("dailies", ("1.2.3.4", DAY)): 3, ("reqs", (VID,)): 2}


def test_add_confirm_and_the_file_follow_each_other(tmp_path):
    r = CounterResidue(str(tmp_path), "cassandra-ks-1")
    r.open()
    path = r.base + ".counters"
    r.add({("hits", ("u",)): 2, ("ips", ("1.1.1.1",)): 1})
    r.add({("hits", ("u",)): 3})
    assert decode_items(open(path, "rb").read()) == {("hits", ("u",)): 5,
                                                     ("ips", ("1.1.1.1",)): 1}
    r.add({("hits", ("u",)): 4})          # more failed while a resend was in flight
    r.confirm({("hits", ("u",)): 5, ("ips", ("1.1.1.1",)): 1})
    assert r.items == {("hits", ("u",)): 4}
    r.confirm({("hits", ("u",)): 4})
    assert r.items == {} and not os.path.exists(path)
    r.close()
    assert os.listdir(tmp_path) == []     # an empty residue leaves nothing behind


def test_a_living_owner_keeps_its_residue_a_dead_one_hands_it_over(tmp_path):
    first = CounterResidue(str(tmp_path), "cassandra-ks-1")
    first.open()
    first.add({("hits", ("u",)): 2})
    second = CounterResidue(str(tmp_path), "cassandra-ks-1")
    second.open()
    assert second.adopt_orphans() == 0 and second.items == {}    # first still holds its lock
    first.close()                          # it stops (or dies) with increments unwritten
    assert os.path.exists(first.base + ".counters")
    assert second.adopt_orphans() == 1
    assert second.items == {("hits", ("u",)): 2}
    assert decode_items(open(second.base + ".counters", "rb").read()) == second.items
    assert not os.path.exists(first.base + ".counters")
    assert not os.path.exists(first.base + ".lock")
    assert second.adopt_orphans() == 0     # adopted once, not twice
    second.close()


def test_other_prefixes_are_not_adopted(tmp_path):
    other = CounterResidue(str(tmp_path), "cassandra-other-2")
    other.open()
    other.add({("hits", ("u",)): 1})
    other.close()
    mine = CounterResidue(str(tmp_path), "cassandra-ks-1")
    mine.open()
    assert mine.adopt_orphans() == 0 and mine.items == {}
    mine.close()


def test_the_owner_holds_an_exclusive_lock(tmp_path):
    r = CounterResidue(str(tmp_path), "p")
    r.open()
    fd = os.open(r.base + ".lock", os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked_by_us = False
        except BlockingIOError:
            locked_by_us = True
        assert locked_by_us
    finally:
        os.close(fd)
        r.close()


def test_add_and_confirm_from_two_threads_at_once_keep_the_sum(tmp_path):
    # the sink adds a failed batch's increments in one executor thread while
    # a resend is confirmed in another: both save the same file
    import threading
    r = CounterResidue(str(tmp_path), "cassandra-ks")
    r.open()
    errors = []

    def run(step):
        try:
            for i in range(300):
                step(i)
        except Exception as exc:          # noqa: BLE001 - reported below
            errors.append(exc)
    r.add({("hits", ("u", i)): 2 for i in range(300)})
    threads = [threading.Thread(target=run, args=(lambda i: r.add({("reqs", (str(i),)): 1}),)),
               threading.Thread(target=run, args=(lambda i: r.confirm({("hits", ("u", i)): 1}),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = {("hits", ("u", i)): 1 for i in range(300)}
    expected.update({("reqs", (str(i),)): 1 for i in range(300)})
    assert r.snapshot() == expected
    assert decode_items(open(r.base + ".counters", "rb").read()) == expected
    r.close()
