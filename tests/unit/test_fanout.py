"""fan_out: the one statement of what events write (DESIGN.md §3)."""
from engine.store.fanout import Batch, fan_out

VID, SID = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def ev(eid, created, **fields):
    e = {"eid": eid, "vid": VID, "sid": SID, "created": created, "first": False,
         "ip": "10.0.0.1", "params": {}}
    e.update(fields)
    return e


def test_winners_by_created_then_eid_whatever_the_order():
    early = ev("b", 1000, first=True, uid="u1", ref="r1", aff="a1", latlon=[1.5, 2.5])
    tie = ev("a", 1000, first=True, uid="u1", ref="r2", aff="a2", latlon=[1.5, 2.5])
    late = ev("c", 2000, first=True, uid="u1", ref="r3", aff="a3", latlon=[1.5, 2.5])
    for order in ([late, early, tie], [tie, late, early], [early, tie, late]):
        rows = fan_out(order).rows
        assert rows["visitors"][(VID,)] is tie               # earliest: (1000, "a")
        assert rows["sessions"][(VID, SID)] is tie
        assert rows["referrals"][(VID,)] is tie
        assert rows["aliases"][(VID, "u1")] is tie and rows["users"][("u1", VID)] is tie
        assert rows["nodes"][(VID, "10.0.0.1")] is late      # latest
        assert rows["locations"][(VID, (1.5, 2.5))] is late
        assert rows["affiliates"][(VID,)] is late


def test_counters_per_key_and_duplicates_dropped():
    events = [ev("a", 0, url="u", last="l", browser="b", bhash="h", outcome="o", sink="s",
                 new_visitor=True),
              ev("b", 86_400_000, url="u"),
              ev("a", 0, url="u")]                        # the same eid again: dropped
    batch = fan_out(events)
    assert [e["eid"] for e in batch] == ["a", "b"]
    c = batch.counters
    assert c["dailies"] == {("10.0.0.1", "1970-01-01"): 1, ("10.0.0.1", "1970-01-02"): 1}
    assert c["ips"] == {("10.0.0.1",): 2} and c["reqs"] == {(VID,): 2}
    assert c["hits"] == {("u",): 2} and c["referrers"] == {("l",): 1}
    assert c["browsers"] == {("b", "h"): 1}
    assert c["outcomes"] == {("o", "s", "u", "1970-01-01"): 1}
    assert c["counters"] == {("vids_created",): 1}


def test_an_event_without_ip_keys_nodes_and_dailies_by_empty_text():
    e = ev("a", 0)
    del e["ip"]
    batch = fan_out([e])
    assert list(batch.rows["nodes"]) == [(VID, "")]
    assert batch.counters["dailies"] == {("", "1970-01-01"): 1} and batch.counters["ips"] == {}


def test_a_batch_is_a_list_and_fans_out_once():
    batch = Batch([ev("a", 0)])
    assert isinstance(batch, list) and fan_out(batch) is batch
    assert batch.rows is batch.rows
