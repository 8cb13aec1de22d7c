"""Write timestamps that make Cassandra keep the right event per row."""
import time
import uuid

from engine._parse import TimeUUIDGen
from engine.store.sinks.cassandra import earliest_ts, latest_ts


def _stamped(gen):
    created = int(time.time() * 1000)
    return created, uuid.UUID(gen.new())


def _eid_us_in_ms(created, eid):
    """The eid's own clock, in µs into the millisecond ``created`` (0..999)."""
    us = (eid.time - 0x01B21DD213814000) // 10 - created * 1000
    return min(max(us, 0), 999)


def test_same_millisecond_events_order_by_eid_clock_across_generators():
    # two workers (two generators, random nodes) stamping in turn: the write
    # timestamps must follow the order the events were taken in
    a, b = TimeUUIDGen(), TimeUUIDGen()
    events = []
    for i in range(2000):
        events.append(_stamped(a if i % 2 else b))
    for (c1, e1), (c2, e2) in zip(events, events[1:]):
        assert latest_ts(c2, e2) >= latest_ts(c1, e1)
        assert earliest_ts(c2, e2) <= earliest_ts(c1, e1)
    same_ms = [(p, q) for p, q in zip(events, events[1:]) if p[0] == q[0]]
    assert same_ms, "no two events fell in the same millisecond"
    # Cassandra's stamps are whole µs: two workers' eids taken within one µs
    # tie (nothing finer exists to order them by); any later µs must win
    for p, q in same_ms:
        assert (latest_ts(*q) - latest_ts(*p)
                == _eid_us_in_ms(*q) - _eid_us_in_ms(*p))
    strictly = sum(latest_ts(*q) > latest_ts(*p) for p, q in same_ms)
    assert strictly > len(same_ms) // 2


def test_earliest_stamps_stay_in_the_past_and_positive():
    created, eid = _stamped(TimeUUIDGen())
    ts = earliest_ts(created, eid)
    assert 0 < ts < time.time() * 1e6
    assert earliest_ts(10 ** 13 - 1, eid) > 0        # still positive in year 2286


def test_eids_outside_the_millisecond_clamp():
    eid = uuid.UUID(TimeUUIDGen().new())
    now = int(time.time() * 1000)
    assert latest_ts(now + 60_000, eid) == (now + 60_000) * 1000        # eid before created
    assert latest_ts(now - 60_000, eid) == (now - 60_000) * 1000 + 999  # eid after it
    assert latest_ts(now, uuid.uuid4()) == now * 1000                   # not version 1


def test_both_stamps_at_once_equal_each_alone():
    from engine.store.sinks.cassandra.stamps import both_ts
    gen = TimeUUIDGen()
    cases = [_stamped(gen) for _ in range(200)]
    cases += [(1_700_000_000_123, str(uuid.uuid4())),            # not version 1: clamps to 0
              (1_700_000_000_123.0, gen.new()),                  # float ms, eid far from it
              (0, gen.new())]
    for created, eid in cases:
        assert both_ts(created, eid) == (earliest_ts(created, eid), latest_ts(created, eid))
