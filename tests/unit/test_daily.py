"""ProxyDailyLimit checker: cached, one store read per IP per ttl, fail-open."""
import asyncio

from engine.limits.daily import DailyLimitChecker, SQLiteDailyRead, utc_day


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class DictRead:
    """A store read from a dict, answered one loop turn later (like a real store)."""

    def __init__(self, stored):
        self.stored = stored

    async def __call__(self, ip, day):
        await asyncio.sleep(0)
        return self.stored.get(ip, 0)


def test_cache_reads_once_per_ttl_and_enforces_the_limit():
    async def scenario():
        clock = Clock()
        read = DictRead({"1.1.1.1": 7})
        checker = DailyLimitChecker(10, read, ttl=5.0, clock=clock)
        first = checker.allowed("1.1.1.1")          # fail-open before the first read
        await asyncio.sleep(0.01)                   # the read lands: 7 stored
        answers = [checker.allowed("1.1.1.1") for _ in range(10)]
        assert first and answers == [True] * 3 + [False] * 7
        assert checker.reads == 1                   # 11 requests, one store read
        assert checker.allowed("2.2.2.2")           # other IPs are separate
        clock.now += 6                              # ttl passed: one more read
        read.stored["1.1.1.1"] = 2                  # e.g. the store was corrected
        checker.allowed("1.1.1.1")
        await asyncio.sleep(0.01)
        assert checker.reads == 3 and checker.allowed("1.1.1.1")
    asyncio.run(scenario())


def test_refused_requests_are_not_counted():
    async def scenario():
        checker = DailyLimitChecker(3, DictRead({}), ttl=5.0, clock=Clock())
        await asyncio.sleep(0)
        answers = [checker.allowed("4.4.4.4") for _ in range(6)]
        return answers, checker.cache["4.4.4.4"][1]
    answers, counted = asyncio.run(scenario())
    assert answers == [True] * 3 + [False] * 3
    assert counted == 3                             # the three refusals added nothing


def test_a_refresh_keeps_requests_counted_after_the_read_was_sent():
    class SlowRead:
        def __init__(self):
            self.release = asyncio.Event()

        async def __call__(self, ip, day):
            await self.release.wait()
            return 4                                # the store saw the first 2 only

    async def scenario():
        read = SlowRead()
        checker = DailyLimitChecker(10, read, ttl=5.0, clock=Clock())
        before = [checker.allowed("5.5.5.5") for _ in range(2)]
        await asyncio.sleep(0)                      # the read is sent now
        during = [checker.allowed("5.5.5.5") for _ in range(3)]
        read.release.set()
        await asyncio.sleep(0.01)
        after_read = checker.cache["5.5.5.5"][:2]
        later = [checker.allowed("5.5.5.5") for _ in range(4)]
        return before + during, after_read, later
    answered, (stored, counted), later = asyncio.run(scenario())
    assert answered == [True] * 5
    assert (stored, counted) == (4, 3)              # the 3 sent during the read stay counted
    assert later == [True] * 3 + [False]            # 4 + 3 + 3 = 10, the limit


def test_a_failing_store_keeps_the_last_value():
    async def broken(ip, day):
        raise OSError("store down")

    async def scenario():
        checker = DailyLimitChecker(2, broken, ttl=5.0, clock=Clock())
        assert checker.allowed("3.3.3.3") and checker.allowed("3.3.3.3")
        await asyncio.sleep(0.01)
        assert not checker.allowed("3.3.3.3")       # local count still enforced
        assert checker.reads == 1                   # and no retry before ttl
    asyncio.run(scenario())


def test_utc_day_is_the_text_the_stores_key_on():
    assert utc_day(0) == "1970-01-01"
    assert utc_day(86_400 * 365 - 1) == "1970-12-31"


def test_sqlite_read_of_the_dailies_table(tmp_path):
    from engine.store.sinks.sqlite import SQLiteSink

    class Cfg:
        schema_version = 1
    sink = SQLiteSink({"Service": "sqlite", "Path": str(tmp_path / "t.db")}, Cfg())
    sink.start_sync()
    sink._conn.execute("INSERT INTO dailies (ip, day, total) VALUES (?, ?, 4)",
                       ("9.9.9.9", utc_day()))
    sink.close_sync()

    async def scenario():
        checker = DailyLimitChecker(5, SQLiteDailyRead(str(tmp_path / "t.db")))
        assert checker.allowed("9.9.9.9")
        for _ in range(50):
            await asyncio.sleep(0.01)
            if not checker.inflight:
                break
        return [checker.allowed("9.9.9.9") for _ in range(3)]
    assert asyncio.run(scenario()) == [True, False, False]
