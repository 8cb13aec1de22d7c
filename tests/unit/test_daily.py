"""ProxyDailyLimit checker: cached, one store read per IP per ttl, fail-open."""
import asyncio

from engine.daily import DailyLimitChecker, SQLiteDailyLimitChecker, utc_day


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class DictChecker(DailyLimitChecker):
    def __init__(self, stored, **kw):
        super().__init__(**kw)
        self.stored = stored

    async def read(self, ip, day):
        await asyncio.sleep(0)
        return self.stored.get(ip, 0)


def test_cache_reads_once_per_ttl_and_enforces_the_limit():
    async def scenario():
        clock = Clock()
        checker = DictChecker({"1.1.1.1": 7}, limit=10, ttl=5.0, clock=clock)
        first = checker.allowed("1.1.1.1")          # fail-open before the first read
        await asyncio.sleep(0.01)                   # the read lands: 7 stored
        answers = [checker.allowed("1.1.1.1") for _ in range(10)]
        assert first and answers == [True] * 3 + [False] * 7
        assert checker.reads == 1                   # 11 requests, one store read
        assert checker.allowed("2.2.2.2")           # other IPs are separate
        clock.now += 6                              # ttl passed: one more read
        checker.stored["1.1.1.1"] = 2               # e.g. the store was corrected
        checker.allowed("1.1.1.1")
        await asyncio.sleep(0.01)
        assert checker.reads == 3 and checker.allowed("1.1.1.1")
    asyncio.run(scenario())


def test_a_failing_store_keeps_the_last_value():
    class Broken(DailyLimitChecker):
        async def read(self, ip, day):
            raise OSError("store down")

    async def scenario():
        checker = Broken(limit=2, ttl=5.0, clock=Clock())
        assert checker.allowed("3.3.3.3") and checker.allowed("3.3.3.3")
        await asyncio.sleep(0.01)
        assert not checker.allowed("3.3.3.3")       # local count still enforced
        assert checker.reads == 1                   # and no retry before ttl
    asyncio.run(scenario())


def test_sqlite_checker_reads_the_dailies_table(tmp_path):
    from engine.sinks.sqlite import SQLiteSink

    class Cfg:
        schema_version = 1
    sink = SQLiteSink({"Service": "sqlite", "Path": str(tmp_path / "t.db")}, Cfg())
    sink.start_sync()
    sink._conn.execute("INSERT INTO dailies (ip, day, total) VALUES (?, ?, 4)",
                       ("9.9.9.9", utc_day()))
    sink.close_sync()

    async def scenario():
        checker = SQLiteDailyLimitChecker(str(tmp_path / "t.db"), 5)
        assert checker.allowed("9.9.9.9")
        for _ in range(50):
            await asyncio.sleep(0.01)
            if not checker.inflight:
                break
        return [checker.allowed("9.9.9.9") for _ in range(3)]
    assert asyncio.run(scenario()) == [True, False, False]
