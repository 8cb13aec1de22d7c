"""The shared token buckets and connection counters, across real processes."""
import multiprocessing
import time

import pytest

from engine.limits._bucket import CONNECTION_SLOTS, SharedLimits

CTX = multiprocessing.get_context("fork")


def _hammer(limits, kind, attempts, out):
    granted = 0
    for i in range(attempts):
        if kind == "ip":
            ok = limits.allow(0, "198.51.100.7", 0.0, 3000.0, 0.0, 0.0) == 0
        elif kind == "global":
            ok = limits.allow(2, "10.0.%d.%d" % (i % 256, i // 256 % 256), 0.0, 0.0, 0.0, 2500.0) == 0
        else:
            ok = limits.allow(1, "203.0.113.1", 0.0, 1000.0, 0.0, 700.0) == 0
        granted += ok
    out.put(granted)


@pytest.mark.parametrize("kind,expected", [("ip", 3000), ("global", 2500), ("both", 700)])
def test_no_token_is_created_or_lost_under_concurrency(kind, expected):
    """Without refill, 4 processes racing for one bucket get exactly its size."""
    limits = SharedLimits.create(4096)
    out = CTX.Queue()
    procs = [CTX.Process(target=_hammer, args=(limits, kind, 4000, out)) for _ in range(4)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    assert total == expected


def test_refill_rate_and_retry_after():
    limits = SharedLimits.create(1024)
    granted = sum(limits.allow(0, "192.0.2.1", 100.0, 5.0, 0.0, 0.0) == 0 for _ in range(50))
    assert granted == 5
    wait = limits.allow(0, "192.0.2.1", 100.0, 5.0, 0.0, 0.0)
    assert wait == 1
    time.sleep(0.05)                      # 100/s: ~5 tokens back, capped at the burst
    granted = sum(limits.allow(0, "192.0.2.1", 100.0, 5.0, 0.0, 0.0) == 0 for _ in range(50))
    assert 3 <= granted <= 5
    assert limits.allow(0, "192.0.2.9", 0.2, 1.0, 0.0, 0.0) == 0
    assert limits.allow(0, "192.0.2.9", 0.2, 1.0, 0.0, 0.0) == 5   # 1 token at 0.2/s


def test_buckets_are_per_ip_and_per_class():
    limits = SharedLimits.create(1024)
    assert limits.allow(0, "192.0.2.1", 1.0, 1.0, 0.0, 0.0) == 0
    assert limits.allow(0, "192.0.2.1", 1.0, 1.0, 0.0, 0.0) > 0
    assert limits.allow(0, "192.0.2.2", 1.0, 1.0, 0.0, 0.0) == 0
    assert limits.allow(1, "192.0.2.1", 1.0, 1.0, 0.0, 0.0) == 0


def test_refused_global_request_takes_no_ip_token():
    limits = SharedLimits.create(1024)
    assert limits.allow(0, "192.0.2.1", 0.0, 2.0, 0.0, 1.0) == 0
    assert limits.allow(0, "192.0.2.1", 0.0, 2.0, 0.0, 1.0) > 0     # global empty
    assert limits.allow(0, "192.0.2.1", 0.0, 2.0, 0.0, 0.0) == 0    # IP token still there


def test_crowded_table_evicts_and_never_refuses_a_new_ip():
    limits = SharedLimits.create(8)
    for i in range(100):                  # far more IPs than slots
        assert limits.allow(0, "10.1.0.%d" % i, 1.0, 1.0, 0.0, 0.0) == 0


def test_connection_counts_are_node_wide_and_reset_per_slot():
    limits = SharedLimits.create(1024)
    out = CTX.Queue()

    def worker(slot, n):
        for _ in range(n):
            limits.conn_add(slot, 1)
        out.put(limits.conn_slot_count(slot))
    procs = [CTX.Process(target=worker, args=(slot, 10 * (slot + 1))) for slot in range(3)]
    for p in procs:
        p.start()
    assert sorted(out.get(timeout=30) for _ in procs) == [10, 20, 30]
    for p in procs:
        p.join(10)
    assert limits.conn_total() == 60
    limits.conn_reset(1)
    assert limits.conn_total() == 40
    with pytest.raises(IndexError):
        limits.conn_reset(CONNECTION_SLOTS)


def test_region_size_is_checked():
    with pytest.raises(ValueError):
        SharedLimits(bytearray(100), 1024)
    with pytest.raises(ValueError):
        SharedLimits(bytearray(SharedLimits.size_for(1024)), 1000)
