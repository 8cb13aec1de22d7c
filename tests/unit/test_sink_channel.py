"""SinkChannel with a real SQLite sink: full batches held in one transaction,
acknowledged only when it commits, written again when it rolls back."""
import asyncio
import sqlite3
import time
import uuid

import pytest

from engine.metrics import StoreStats
from engine.store.batcher import SinkChannel
from engine.store.fanout import Batch
from engine.store.sinks.sqlite import SQLiteSink

V1, S1 = "3d0be300-cbd2-11e8-aa59-ffd128a54d91", "3d0be301-cbd2-11e8-aa59-ffd128a54d91"
T = 1764285326123


class Cfg:
    schema_version = 1


def ev(**kw):
    e = {"eid": str(uuid.uuid4()), "vid": V1, "sid": S1, "created": T,
         "first": False, "ip": "127.0.0.1", "params": {}}
    e.update(kw)
    return e


def stored(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM ev").fetchone()[0]
    finally:
        conn.close()


async def until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


class Harness:
    """A channel on a started SQLite sink; batches of ``size`` events, each
    with a redo that counts its calls and builds copies of its events."""

    def __init__(self, path, **entry):
        self.path = path
        self.sink = SQLiteSink({"Service": "sqlite", "Path": path, **entry}, Cfg())
        self.sink.start_sync()
        self.stats = StoreStats()
        self.channel = SinkChannel(self.sink, self.stats, "0-sqlite")
        self.acks, self.redone = [], []

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self.channel.run())

    def send(self, name, events, full=True):
        def redo():
            self.redone.append(name)
            return Batch([dict(e) for e in events])
        self.channel.enqueue(Batch(list(events)), lambda: self.acks.append(name),
                             redo if full else None)

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.sink.close_sync()


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 30))


def test_full_batches_share_a_transaction_acknowledged_at_its_commit(tmp_path):
    async def main():
        h = Harness(str(tmp_path / "t.db"), TransactionMaxEvents=250)
        h.start()
        h.send("a", [ev() for _ in range(100)])
        h.send("b", [ev() for _ in range(100)])
        await until(lambda: len(h.channel.held) == 2)
        assert h.acks == [] and stored(h.path) == 0 and h.channel.healthy
        h.send("c", [ev() for _ in range(100)])     # 300 events: past 250, committed
        await until(lambda: h.acks == ["a", "b", "c"])
        assert stored(h.path) == 300 and not h.channel.held
        assert h.stats.sink_commits == {"sqlite": 1}
        assert h.stats.sink_written == {"sqlite": 300} and len(h.stats.flushes) == 3
        await h.stop()
    run(main())


def test_a_batch_closed_by_its_age_is_committed_at_once(tmp_path):
    async def main():
        h = Harness(str(tmp_path / "t.db"))
        h.start()
        h.send("a", [ev() for _ in range(10)], full=False)
        await until(lambda: h.acks == ["a"])
        assert stored(h.path) == 10 and h.stats.sink_commits == {"sqlite": 1}
        await h.stop()
    run(main())


def test_held_batches_commit_at_the_age_limit_with_nothing_after_them(tmp_path):
    async def main():
        h = Harness(str(tmp_path / "t.db"), TransactionMaxAgeMs=300)
        h.start()
        started = time.monotonic()
        h.send("a", [ev() for _ in range(10)])
        await until(lambda: len(h.channel.held) == 1)
        assert h.acks == []
        await until(lambda: h.acks == ["a"])
        assert time.monotonic() - started >= 0.3 and stored(h.path) == 10
        await h.stop()
    run(main())


def test_drain_commits_what_is_held_at_once(tmp_path):
    async def main():
        h = Harness(str(tmp_path / "t.db"))          # 5 s of holding by default
        h.start()
        h.send("a", [ev() for _ in range(10)])
        await until(lambda: len(h.channel.held) == 1)
        h.channel.drain()
        await until(lambda: h.acks == ["a"], timeout=2)
        h.send("b", [ev() for _ in range(10)])      # draining: nothing held any more
        await until(lambda: h.acks == ["a", "b"], timeout=2)
        await h.stop()
    run(main())


def test_an_empty_batch_is_acknowledged_after_the_held_ones(tmp_path):
    """A batch whose events were all dropped (robots) carries the spool
    position past the held batches' records: it waits for their commit."""
    async def main():
        h = Harness(str(tmp_path / "t.db"), TransactionMaxAgeMs=300)
        h.start()
        h.send("a", [ev() for _ in range(10)])
        h.send("robots", [], full=False)
        await until(lambda: h.acks == ["a", "robots"])
        assert stored(h.path) == 10
        h.send("robots again", [], full=False)       # nothing held: at once
        await until(lambda: h.acks[-1] == "robots again", timeout=1)
        await h.stop()
    run(main())


def test_a_failure_writes_the_held_batches_again_each_once(tmp_path):
    """A batch that fails rolls back the held ones with it; they are built
    again (redo), written before it, the first in a transaction of its own
    (nothing is held until a commit succeeds), and every event is stored once."""
    async def main():
        h = Harness(str(tmp_path / "t.db"))
        h.start()
        h.send("a", [ev(url="a") for _ in range(10)])
        h.send("b", [ev(url="b") for _ in range(10)])
        await until(lambda: len(h.channel.held) == 2)
        culprit = ev(vid=None)                       # NOT NULL: the whole transaction fails
        h.send("bad", [ev(url="c"), culprit], full=False)
        await until(lambda: not h.channel.healthy)
        assert h.acks == [] and stored(h.path) == 0
        assert [e.redo is not None for e in h.channel.pending] == [True, True, False]
        culprit["vid"] = V1                          # the store recovers
        await until(lambda: h.acks == ["a", "b", "bad"], timeout=5)
        assert h.redone == ["a", "b"] and h.channel.healthy
        assert stored(h.path) == 22
        assert h.stats.sink_commits == {"sqlite": 2}    # a alone, then b held with bad
        assert h.stats.sink_failed == {"sqlite": 1}
        await h.stop()
    run(main())


@pytest.mark.parametrize("entry", [{"TransactionMaxEvents": 1}, {}])
def test_a_channel_without_spanning_acknowledges_every_batch(tmp_path, entry):
    """TransactionMaxEvents no larger than a batch, or a channel with its own
    writer (the NATS consumer's): one transaction per batch."""
    async def main():
        h = Harness(str(tmp_path / "t.db"), **entry)
        if not entry:
            h.channel = SinkChannel(h.sink, h.stats, "0-sqlite", write=h.sink.write_batch)
        h.start()
        h.send("a", [ev() for _ in range(10)])
        await until(lambda: h.acks == ["a"])
        assert stored(h.path) == 10 and not h.channel.held
        await h.stop()
    run(main())
