"""Write timestamps derived from the event, so Cassandra keeps the right one.

Row tables keep one event per key (engine/store/fanout.py). Cassandra keeps,
cell by cell, the write with the larger timestamp; the sink stamps every row
write from the event itself (never from the clock at write time), so the
result does not depend on batch order, retries or replays:

- earliest-wins tables: ``earliest_ts`` grows as the event gets *earlier*;
- latest-wins tables: ``latest_ts`` is the event's own time in µs.

Both order two events of the same millisecond by their eid's 100 ns clock.
"""
_UUID_EPOCH_OFFSET = 0x01B21DD213814000   # 100 ns ticks from 1582-10-15 to 1970-01-01
_INVERT_BASE = 10 ** 15


def sub_ms(created_ms, eid):
    """Microseconds into ``created_ms`` at which the event was stamped (0..999).

    ``eid`` is the canonical text of the event id. Version-1 eids carry a
    100 ns clock (strictly increasing per worker, the wall clock across
    workers), so two events of the same millisecond order by when they were
    taken, not by random bits of the eid. Eids that are not version 1, or
    whose time lies outside the millisecond, clamp to its ends."""
    if eid[14:15] != "1":
        return 0
    ticks = int(eid[15:18] + eid[9:13] + eid[0:8], 16)
    us = (ticks - _UUID_EPOCH_OFFSET) // 10 - int(created_ms) * 1000
    return 0 if us < 0 else 999 if us > 999 else us


def earliest_ts(created_ms, eid):
    """Write timestamp for earliest-wins tables: larger for earlier events.

    ``10^15 - 100 * created_ms - (10 µs steps into the millisecond)``: events
    of the same millisecond still order by their eid's clock. The values lie
    around 1996 (in microseconds) and stay positive until year 2286, so a plain
    DELETE beats them."""
    return _INVERT_BASE - 100 * int(created_ms) - sub_ms(created_ms, str(eid)) // 10


def latest_ts(created_ms, eid):
    """Write timestamp for latest-wins tables: the event's own time (µs)."""
    return int(created_ms) * 1000 + sub_ms(created_ms, str(eid))


def both_ts(created_ms, eid):
    """(earliest_ts, latest_ts) of one event, its eid's clock read once."""
    ms = int(created_ms)
    sub = sub_ms(ms, str(eid))
    return _INVERT_BASE - 100 * ms - sub // 10, ms * 1000 + sub
